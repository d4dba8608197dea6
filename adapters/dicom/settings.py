"""``TELEIMG_DICOM_*`` settings of the DICOM adapter (README lists them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fhir_server.core.safepath import UnsafeIdentifier, check_ae_title


@dataclass(frozen=True)
class DicomSettings:
    host: str = "127.0.0.1"
    port: int = 0  # 0: no C-STORE SCP
    ae_title: str = "TELEIMAGERIE"
    allowed_aes: frozenset[str] = frozenset()  # empty: any calling AE title
    wado_url: str = ""  # WADO-RS base of the archive -> ImagingStudy.endpoint
    timezone: str = "Europe/Paris"  # for DICOM dates without TimezoneOffsetFromUTC
    max_upload_bytes: int = 512 * 1024 * 1024  # one STOW-RS request (pixels included)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DicomSettings:
        env = os.environ if env is None else env
        port = env.get("TELEIMG_DICOM_PORT", "").strip()
        if port.lower() == "off":  # as serve reads it (and TELEIMG_MLLP_PORT): no SCP
            port = "0"
        if port and not (port.isdigit() and int(port) <= 65535):
            raise SystemExit(f"TELEIMG_DICOM_PORT must be a TCP port (0-65535) or off, "
                             f"got {port!r}")
        try:  # AE titles follow VR AE (PS3.5 §6.2), never cut silently (issue 27 item 1)
            ae_title = check_ae_title(env.get("TELEIMG_DICOM_AE_TITLE", "TELEIMAGERIE"),
                                      "TELEIMG_DICOM_AE_TITLE")
            allowed = frozenset(check_ae_title(a, "TELEIMG_DICOM_ALLOWED_AES") for a in
                                env.get("TELEIMG_DICOM_ALLOWED_AES", "").split(",")
                                if a.strip())
        except UnsafeIdentifier as exc:
            raise SystemExit(str(exc)) from None
        return cls(
            host=env.get("TELEIMG_DICOM_HOST", "127.0.0.1"),
            port=int(port or 0),
            ae_title=ae_title,
            allowed_aes=allowed,
            wado_url=env.get("TELEIMG_DICOM_WADO_URL", "").rstrip("/"),
            timezone=env.get("TELEIMG_DICOM_TIMEZONE", "Europe/Paris"),
            max_upload_bytes=int(env.get("TELEIMG_DICOM_MAX_UPLOAD_BYTES", "")
                                 or 512 * 1024 * 1024),
        )
