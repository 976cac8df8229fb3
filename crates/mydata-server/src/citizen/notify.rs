//! Delivery of one-time passwords (spec D46): e-mail over SMTP (lettre), text messages through an
//! HTTP gateway, and, in sandbox mode only, the server log when neither is configured.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;
use crate::error::{ServerError, ServerResult};

/// Where a one-time password goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The registered e-mail address.
    Email,
    /// The registered mobile number.
    Mobile,
}

impl Channel {
    /// The form value (`email`, `mobile`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Mobile => "mobile",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Channel::Email),
            "mobile" => Some(Channel::Mobile),
            _ => None,
        }
    }
}

/// Sends one-time passwords.
pub struct Notifier {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    sms: Option<String>,
    log_codes: bool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("smtp", &self.smtp.is_some())
            .field("sms", &self.sms.is_some())
            .field("log_codes", &self.log_codes)
            .finish()
    }
}

/// Masks a contact for display: `wa***@example.test`, `0912***001`.
pub fn mask(contact: &str) -> String {
    let chars: Vec<char> = contact.chars().collect();
    if let Some(at) = contact.find('@') {
        let local: Vec<char> = contact[..at].chars().collect();
        let keep: String = local.iter().take(2).collect();
        return format!("{keep}***{}", &contact[at..]);
    }
    if chars.len() <= 6 {
        return "***".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}***{tail}")
}

impl Notifier {
    /// Builds the notifier of a configuration.
    pub fn from_config(c: &Config) -> ServerResult<Self> {
        let smtp = if c.smtp_url.is_empty() {
            None
        } else {
            let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(&c.smtp_url)
                .map_err(|e| ServerError::Config(format!("smtp_url: {e}")))?
                .timeout(Some(Duration::from_secs(15)))
                .build();
            let from: Mailbox = c
                .smtp_from
                .parse()
                .map_err(|e| ServerError::Config(format!("smtp_from: {e}")))?;
            Some((t, from))
        };
        let sms = (!c.sms_webhook.is_empty()).then(|| c.sms_webhook.clone());
        Ok(Notifier {
            smtp,
            sms,
            log_codes: c.sandbox,
        })
    }

    /// Whether codes can be sent on `channel`.
    pub fn offers(&self, channel: Channel) -> bool {
        self.log_codes
            || match channel {
                Channel::Email => self.smtp.is_some(),
                Channel::Mobile => self.sms.is_some(),
            }
    }

    /// Sends `code` to `to` on `channel`.
    pub async fn send_otp(&self, channel: Channel, to: &str, code: &str) -> ServerResult<()> {
        let text = format!(
            "MyData 一次性密碼 / one-time password: {code}\n\
             2 分鐘內有效，請勿提供給他人。Valid for 2 minutes; do not share it.\n"
        );
        match channel {
            Channel::Email if self.smtp.is_some() => {
                let Some((t, from)) = &self.smtp else {
                    return Err(ServerError::Internal("no SMTP".into()));
                };
                let to: Mailbox = to
                    .parse()
                    .map_err(|e| ServerError::Invalid(format!("e-mail address: {e}")))?;
                let msg = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject("MyData 一次性密碼 / one-time password")
                    .header(ContentType::TEXT_PLAIN)
                    .body(text)
                    .map_err(|e| ServerError::Internal(format!("e-mail: {e}")))?;
                t.send(msg)
                    .await
                    .map_err(|e| ServerError::Upstream(format!("SMTP: {e}")))?;
                Ok(())
            }
            Channel::Mobile if self.sms.is_some() => {
                let url = self.sms.as_deref().unwrap_or_default();
                let body = serde_json::json!({ "to": to, "text": text });
                // An https:// gateway: TLS 1.2 or later, system roots, host name checked (D49).
                let tls = mydata_protocol::tls::connector::connector(&Default::default())
                    .map_err(|e| ServerError::Internal(format!("SMS gateway TLS: {e}")))?;
                let r = awc::Client::builder()
                    .connector(awc::Connector::new().openssl(tls))
                    .timeout(Duration::from_secs(15))
                    .disable_redirects()
                    .finish()
                    .post(url)
                    .send_json(&body)
                    .await
                    .map_err(|e| ServerError::Upstream(format!("SMS gateway: {e}")))?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(ServerError::Upstream(format!(
                        "SMS gateway answered {}",
                        r.status()
                    )))
                }
            }
            _ if self.log_codes => {
                // Sandbox only, and only when no real delivery is configured: the operator's
                // terminal plays the citizen's phone (spec D46).
                eprintln!(
                    "mydata: sandbox one-time password for {} ({}): {code}",
                    mask(to),
                    channel.as_str()
                );
                Ok(())
            }
            _ => Err(ServerError::Invalid(format!(
                "no {} delivery is configured",
                channel.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_contacts() {
        assert_eq!(mask("wang.daming@example.test"), "wa***@example.test");
        assert_eq!(mask("0912000001"), "0912***001");
        assert_eq!(mask("123"), "***");
    }
}
