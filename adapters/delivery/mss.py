"""The MSSanté mail of a report (ANS *mapping-mss.md*, *regles-gestion-mssante.md*;
R-SEC-5): from our applicative mailbox (BAL applicative) to one professional's MSSanté
address, with the report as PDF and the ``IHE_XDM.ZIP`` archive (ITI-32) holding the CDA,
sent through the configured SMTP relay of the MSSanté operator.

The Message-ID derives from the delivery, so a resend after an uncertain attempt is the
same message for the recipient's client.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from adapters.cda.metadata import Metadata
from adapters.delivery.settings import DeliverySettings


@dataclass
class Mail:
    message: EmailMessage
    recipient: str


def compose(settings: DeliverySettings, delivery_id: str, to: str, meta: Metadata,
            pdf: bytes | None, xdm: bytes, body: str, withdrawn: bool = False) -> Mail:
    """``withdrawn``: the notice that the document was withdrawn by its author."""
    msg = EmailMessage()
    msg["From"] = settings.mss_from
    msg["To"] = to
    if withdrawn:
        msg["Subject"] = f"Retrait : {meta.title} — {meta.patient_name} " \
                         f"(version {meta.version}, émis par erreur)"
    else:
        msg["Subject"] = f"{meta.title} — {meta.patient_name}" + (
            f" (version {meta.version}, remplace la précédente)" if meta.replaces else "")
    msg["Date"] = formatdate(localtime=True)
    domain = settings.mss_from.rpartition("@")[2] or "teleimagerie.local"
    msg["Message-ID"] = f"<{delivery_id}@{domain}>"
    # what MSSanté clients use to file the document without opening the archive
    msg["X-MSS-CODECDA"] = f"{meta.type.code}^{meta.type.display}^LN"
    if meta.ins:
        msg["X-MSS-INS"] = meta.patient_id
    msg.set_content(body)
    if pdf is not None:
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename="compte-rendu.pdf")
    msg.add_attachment(xdm, maintype="application", subtype="zip",
                       filename="IHE_XDM.ZIP")
    return Mail(msg, to)


class Rejected(Exception):
    """The relay refused for good (5xx): resending the same mail would fail again."""


def send(settings: DeliverySettings, mail: Mail) -> str:
    """Hand the mail to the relay; returns its answer. Raises :class:`Rejected` on a
    permanent refusal, OSError / SMTPException on anything worth a retry."""
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                      timeout=settings.timeout) as smtp:
        smtp.ehlo()
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        try:
            refused = smtp.send_message(mail.message, to_addrs=[mail.recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            if 500 <= code < 600:
                raise Rejected(f"{code} {text.decode(errors='replace')}") from None
            raise
        except smtplib.SMTPDataError as exc:
            if 500 <= exc.smtp_code < 600:
                error: bytes | str = exc.smtp_error
                reason = error.decode(errors="replace") if isinstance(error, bytes) else error
                raise Rejected(f"{exc.smtp_code} {reason}") from None
            raise
        if refused:
            raise Rejected(str(refused))
        return f"250 accepté par {settings.smtp_host}:{settings.smtp_port}"
