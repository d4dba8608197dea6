"""Report delivery settings from ``TELEIMG_*`` variables (README, "Report delivery")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.cda.metadata import Code
from adapters.settings import number

CHANNELS = ("dmp", "ris", "mssante")
# XDSSubmissionSet.contentTypeCode (JDV_J59 ContentTypeCode-DMP); a setting, to check
# against the DMP's current value set at integration
CONTENT_TYPE = Code("04", "Hospitalisation", "1.2.250.1.213.1.1.4.4")


def _code(text: str, default: Code) -> Code:
    """``code^display^scheme`` -> Code."""
    if not text:
        return default
    parts = ([*text.split("^"), "", ""])[:3]
    return Code(parts[0], parts[1] or parts[0], parts[2] or default.scheme)


@dataclass(frozen=True)
class DeliverySettings:
    channels: frozenset[str] = frozenset(CHANNELS)
    retry_base: float = 30.0  # backoff: base * 2^(attempt-1), capped at retry_max
    retry_max: float = 3600.0
    max_attempts: int = 10  # then dead letter
    recheck: float = 300.0  # how often a held delivery (opposition, identity) is re-examined
    timeout: float = 60.0
    # DMP (XDS.b ITI-41)
    xds_url: str = ""
    xds_update_url: str = ""  # ITI-57 (document registry); empty: the ITI-41 endpoint
    sign_cert: str = ""
    sign_key: str = ""
    source_id: str = ""  # XDSSubmissionSet.sourceId: our system's OID
    structure_id: str = ""  # VIHF Identifiant_Structure (e.g. 1 + FINESS)
    facility_type: str = "SA01^1.2.250.1.71.4.2.4"  # VIHF Secteur_Activite (JDV_J61)
    content_type: Code = CONTENT_TYPE
    homologation: str = ""  # LPS_ID_HOMOLOGATION_DMP
    product: str = "teleimagerie"
    product_version: str = "0.1.0"
    # MSSanté (SMTP)
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    mss_from: str = ""  # the applicative mailbox (BAL applicative) we send from
    mss_domains: tuple[str, ...] = ("mssante.fr",)  # R-SEC-5: secure messaging only

    @property
    def dmp_ready(self) -> str:
        """Empty when the DMP channel can send, else what is missing."""
        missing = [name for name, value in (
            ("TELEIMG_DMP_XDS_URL", self.xds_url), ("TELEIMG_DMP_SIGN_CERT", self.sign_cert),
            ("TELEIMG_DMP_SIGN_KEY", self.sign_key), ("TELEIMG_DMP_SOURCE_ID", self.source_id),
            ("TELEIMG_DMP_STRUCTURE_ID", self.structure_id)) if not value]
        return ", ".join(missing)

    @property
    def mss_ready(self) -> str:
        missing = [name for name, value in (("TELEIMG_MSS_SMTP", self.smtp_host),
                                            ("TELEIMG_MSS_FROM", self.mss_from)) if not value]
        return ", ".join(missing)

    def secure(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.mss_domains)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeliverySettings:
        env = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            return number(env, name, default)

        channels = frozenset(c.strip() for c in env.get(
            "TELEIMG_DELIVERY_CHANNELS", ",".join(CHANNELS)).split(",") if c.strip())
        unknown = channels - set(CHANNELS)
        if unknown:
            raise SystemExit(f"TELEIMG_DELIVERY_CHANNELS: unknown {sorted(unknown)} "
                             f"(known: {', '.join(CHANNELS)})")
        smtp = env.get("TELEIMG_MSS_SMTP", "")
        host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "25")
        defaults = cls()
        return cls(
            channels=channels,
            retry_base=num("TELEIMG_DELIVERY_RETRY_BASE", 30.0),
            retry_max=num("TELEIMG_DELIVERY_RETRY_MAX", 3600.0),
            max_attempts=int(num("TELEIMG_DELIVERY_MAX_ATTEMPTS", 10)),
            recheck=num("TELEIMG_DELIVERY_RECHECK", 300.0),
            timeout=num("TELEIMG_DELIVERY_TIMEOUT", 60.0),
            xds_url=env.get("TELEIMG_DMP_XDS_URL", ""),
            xds_update_url=env.get("TELEIMG_DMP_XDS_UPDATE_URL", ""),
            sign_cert=env.get("TELEIMG_DMP_SIGN_CERT", ""),
            sign_key=env.get("TELEIMG_DMP_SIGN_KEY", ""),
            source_id=env.get("TELEIMG_DMP_SOURCE_ID", ""),
            structure_id=env.get("TELEIMG_DMP_STRUCTURE_ID", ""),
            facility_type=env.get("TELEIMG_DMP_FACILITY_TYPE", defaults.facility_type),
            content_type=_code(env.get("TELEIMG_DMP_CONTENT_TYPE", ""),
                               defaults.content_type),
            homologation=env.get("TELEIMG_DMP_HOMOLOGATION", ""),
            smtp_host=host, smtp_port=int(port or 25) if port.isdigit() else 25,
            smtp_starttls=env.get("TELEIMG_MSS_STARTTLS", "off").lower() in ("1", "on",
                                                                             "true", "yes"),
            smtp_user=env.get("TELEIMG_MSS_USER", ""),
            smtp_password=env.get("TELEIMG_MSS_PASSWORD", ""),
            mss_from=env.get("TELEIMG_MSS_FROM", ""),
            mss_domains=tuple(d.strip().lower() for d in env.get(
                "TELEIMG_MSS_DOMAINS", "mssante.fr").split(",") if d.strip()),
        )
