//! The delivery backends `relance run` is started with (`--email smtp`, `--sms sns`, ...),
//! built from their settings in the environment, checked before anything starts.

use std::sync::Arc;

use anyhow::{Context, Result};
use relance_aws::bridge::Bridge;
use relance_aws::channels::SenderConfig;
use relance_aws::channels::direct::{SesBackend, SnsBackend, WebPushBackend};
use relance_core::delivery::Backend;
use relance_core::scenario::Channel;
use relance_embedded::delivery::Backends;

use crate::args::{DeliveryArgs, EmailBackend, SnsBackendChoice, WebPushBackendChoice};

/// The backends chosen, and the default sender address (for `Message-ID`s).
#[derive(Debug)]
pub struct Chosen {
    /// One per channel delivered for real.
    pub backends: Backends,
    /// `RELANCE_FROM_EMAIL`, or empty.
    pub from_email: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The sender settings of the AWS backends: the functions' own (`RELANCE_FROM_EMAIL`, the SMS
/// settings, the send rate, the provider lists), the sender address required only for SES,
/// with `relance run`'s unsubscribe links.
fn sender_config(
    needs_from: bool,
    unsubscribe: Option<relance_core::unsubscribe::UnsubscribeLinks>,
) -> Result<SenderConfig> {
    let mut config = if needs_from {
        SenderConfig::from_env_with_secret(None)
    } else {
        SenderConfig::from_env_without_sender()
    }
    .context("the SES/SNS delivery settings")?;
    config.unsubscribe = unsubscribe;
    Ok(config)
}

/// Builds the backends `args` names, on `tokio` (the AWS SDK's runtime). Settings that are
/// missing or wrong fail here, naming the variable.
pub fn backends(
    args: &DeliveryArgs,
    tokio: &tokio::runtime::Runtime,
    unsubscribe: Option<relance_core::unsubscribe::UnsubscribeLinks>,
) -> Result<Chosen> {
    let mut backends = Backends::none();
    let from_email = env("RELANCE_FROM_EMAIL").unwrap_or_default();
    let uses_aws = args.email == EmailBackend::Ses
        || args.sms == SnsBackendChoice::Sns
        || args.push == SnsBackendChoice::Sns;
    if uses_aws {
        let sdk = crate::aws::sdk(tokio, None);
        let bridge = Bridge::new(tokio.handle().clone());
        let config = sender_config(args.email == EmailBackend::Ses, unsubscribe.clone())?;
        if args.email == EmailBackend::Ses {
            let mut ses = relance_aws::channels::SesSender::new(
                aws_sdk_sesv2::Client::new(&sdk),
                config.clone(),
                bridge.clone(),
            );
            if config.ses_v1 {
                ses = ses.with_v1(aws_sdk_ses::Client::new(&sdk));
            }
            let backend: Arc<dyn Backend> = Arc::new(SesBackend::new(ses, &config));
            backends = backends.with(Channel::Email, backend);
        }
        if args.sms == SnsBackendChoice::Sns || args.push == SnsBackendChoice::Sns {
            let sns: Arc<dyn Backend> = Arc::new(SnsBackend::new(
                aws_sdk_sns::Client::new(&sdk),
                &config,
                bridge,
            ));
            if args.sms == SnsBackendChoice::Sns {
                backends = backends.with(Channel::Sms, sns.clone());
            }
            if args.push == SnsBackendChoice::Sns {
                backends = backends.with(Channel::Push, sns);
            }
        }
    }
    if args.email == EmailBackend::Smtp {
        let settings = relance_embedded::smtp::SmtpSettings::from_env()
            .context("the SMTP delivery settings")?;
        let backend: Arc<dyn Backend> = Arc::new(
            tokio
                .block_on(async { relance_embedded::smtp::SmtpBackend::new(settings) })
                .context("the SMTP delivery settings")?,
        );
        backends = backends.with(Channel::Email, backend);
    }
    if args.web_push == WebPushBackendChoice::Direct {
        let config =
            relance_aws::webpush::WebPushConfig::from_env().context("the web push settings")?;
        let sender =
            relance_aws::webpush::WebPushSender::new(config).context("the web push settings")?;
        let backend: Arc<dyn Backend> = Arc::new(WebPushBackend::new(sender));
        backends = backends.with(Channel::WebPush, backend);
    }
    Ok(Chosen {
        backends,
        from_email,
    })
}
