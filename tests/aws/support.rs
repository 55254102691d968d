//! What the emulator tests share: whether the emulator is there, its clients, sample payloads,
//! queues, and reading back what the emulator recorded (kept here so another emulator can be
//! swapped in).
#![allow(dead_code)]

use std::sync::{Once, OnceLock};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use serde_json::Value;

pub struct Emulator {
    pub runtime: tokio::runtime::Runtime,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ses: aws_sdk_sesv2::Client,
    pub sns: aws_sdk_sns::Client,
    pub eb: aws_sdk_eventbridge::Client,
}

/// Clients on the emulator whose every request is recorded by one meter (the cost and
/// permissions tests read what each handler really called).
pub struct Metered {
    pub runtime: tokio::runtime::Runtime,
    pub meter: relance_aws::meter::Meter,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ses: aws_sdk_sesv2::Client,
    pub sns: aws_sdk_sns::Client,
    pub eb: aws_sdk_eventbridge::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

/// A fresh set of metered clients (a test that reads only its own requests makes its own).
pub fn metered() -> Metered {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run ./scripts/test"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let meter = relance_aws::meter::Meter::default();
    let sdk = runtime.block_on(aws_config::load_from_env());
    macro_rules! metered {
        ($krate:ident) => {
            $krate::Client::from_conf(
                $krate::config::Builder::from(&sdk)
                    .interceptor(meter.interceptor())
                    .build(),
            )
        };
    }
    Metered {
        dynamo: metered!(aws_sdk_dynamodb),
        sqs: metered!(aws_sdk_sqs),
        ses: metered!(aws_sdk_sesv2),
        sns: metered!(aws_sdk_sns),
        eb: metered!(aws_sdk_eventbridge),
        secrets: metered!(aws_sdk_secretsmanager),
        runtime,
        meter,
    }
}

/// True when no emulator is configured (`AWS_ENDPOINT_URL` unset): the test returns at once,
/// and the first one says so, once, past the test harness's capture, so an offline `cargo
/// test` passes and tells why these tests did nothing. `./scripts/test` sets the variable.
pub fn offline() -> bool {
    static SAID: Once = Once::new();
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return false;
    }
    SAID.call_once(|| {
        use std::io::Write;
        // Written to the process's stderr itself: `eprintln!` would be captured.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the AWS emulator tests need the AWS emulator (AWS_ENDPOINT_URL is not set); run ./scripts/test"
        );
    });
    true
}

pub fn emulator() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "AWS_ENDPOINT_URL is not set: run ./scripts/test, which starts the local AWS emulator"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (dynamo, sqs, ses, sns, eb) = runtime.block_on(async {
            let config = aws_config::load_from_env().await;
            (
                aws_sdk_dynamodb::Client::new(&config),
                aws_sdk_sqs::Client::new(&config),
                aws_sdk_sesv2::Client::new(&config),
                aws_sdk_sns::Client::new(&config),
                aws_sdk_eventbridge::Client::new(&config),
            )
        });
        Emulator {
            runtime,
            dynamo,
            sqs,
            ses,
            sns,
            eb,
        }
    })
}

pub fn sample<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = events_dir().join(name).display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The repository's `events/` folder (these helpers are compiled from more than one crate).
pub fn events_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|p| p.join("events"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no events/ folder above {}", env!("CARGO_MANIFEST_DIR")))
}

/// A dispatch onto the step and launch queues a test created (the tick and the fan-out).
pub fn dispatch(
    queues: &relance_aws::sqs::SqsQueues,
    step: Option<&str>,
    launch: Option<&str>,
) -> relance_aws::dispatch::AwsDispatch {
    relance_aws::dispatch::AwsDispatch::new(
        queues.clone(),
        relance_aws::config::QueueUrls {
            step: step.map(str::to_string),
            launch: launch.map(str::to_string),
            ..Default::default()
        },
    )
}

pub fn create_queue(name: &str) -> String {
    let emu = emulator();
    emu.runtime
        .block_on(emu.sqs.create_queue().queue_name(name).send())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .queue_url
        .unwrap_or_else(|| panic!("no url"))
}

/// A consumer's rule on `bus` with `pattern` (no target: a rule receives whatever it
/// matches); returns its name.
pub fn listen_on_bus(bus: &str, pattern: &str) -> String {
    static RULES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "{bus}-rule{}",
        RULES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let emu = emulator();
    emu.runtime
        .block_on(
            emu.eb
                .put_rule()
                .name(&name)
                .event_bus_name(bus)
                .event_pattern(pattern)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    name
}

/// An archive of `bus`'s events named `name`, keeping those `pattern` matches (all without).
pub fn archive_bus(bus: &str, name: &str, pattern: Option<&str>) {
    let emu = emulator();
    emu.runtime.block_on(async {
        let arn = emu
            .eb
            .describe_event_bus()
            .name(bus)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .arn
            .unwrap_or_default();
        emu.eb
            .create_archive()
            .archive_name(name)
            .event_source_arn(arn)
            .set_event_pattern(pattern.map(str::to_string))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    });
}

/// Every message now visible on a queue (read once; they stay for the visibility timeout).
/// A queue's ARN (rules and redrive policies name queues by ARN).
pub fn queue_arn(url: &str) -> String {
    let emu = emulator();
    emu.runtime
        .block_on(
            emu.sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default()
}

/// Reads and deletes every visible message of a queue: (message id, body).
pub fn drain(url: &str) -> Vec<(String, String)> {
    let emu = emulator();
    let mut out = Vec::new();
    loop {
        let got = emu
            .runtime
            .block_on(
                emu.sqs
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(0)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            // Consumed, as Lambda's event source mapping deletes what a batch handled.
            if let Some(h) = &m.receipt_handle {
                let _ = emu.runtime.block_on(
                    emu.sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(h)
                        .send(),
                );
            }
            out.push((m.message_id.unwrap_or_default(), m.body.unwrap_or_default()));
        }
    }
}

pub fn sqs_event(messages: &[(String, String)]) -> SqsEvent {
    let records: Vec<SqsMessage> = messages
        .iter()
        .map(|(id, body)| serde_json::from_value(serde_json::json!({"messageId": id, "body": body, "attributes": {}, "messageAttributes": {}})).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    serde_json::from_value(serde_json::json!({"Records": records}))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timezone(&Utc)
}

/// What the emulator recorded (`/_ministack/ses/messages`, `/_ministack/sns/sms-messages`);
/// kept in this one helper so another emulator can be swapped in.
pub fn emulator_read(path: &str) -> Value {
    use std::io::{Read, Write};
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&host).unwrap_or_else(|e| panic!("{host}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("{e}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("null");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// How many emails the emulator holds for an address.
pub fn emails_to(v: &Value, address: &str) -> usize {
    let all = v["messages"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .flat_map(|l| l.as_array().into_iter().flatten());
    all.filter(|m| {
        m["To"]
            .as_array()
            .is_some_and(|to| to.iter().any(|t| t == address))
    })
    .count()
}

/// How many SMS the emulator holds for a number.
pub fn sms_to(v: &Value, number: &str) -> usize {
    v["sms_messages"][number].as_array().map_or(0, Vec::len)
}

/// Makes `address` a verified SES identity (SES, like the AWS sandbox, sends only from one).
pub fn verify_identity(address: &str) {
    let emu = emulator();
    if let Err(e) = emu.runtime.block_on(
        emu.ses
            .create_email_identity()
            .email_identity(address)
            .send(),
    ) {
        assert!(format!("{e:?}").contains("AlreadyExists"), "{e:?}");
    }
}

/// A signed one-click unsubscribe token for a contact of the `news` scenario's `first` send
/// (newsletter), as the email's link carries it.
pub fn unsubscribe_token(secret: &[u8], contact: &str) -> String {
    relance_core::unsubscribe::UnsubscribeClaim {
        contact: contact.into(),
        communication_type: "newsletter".into(),
        scenario: "news".into(),
        step: "first".into(),
    }
    .sign(secret)
    .unwrap_or_default()
}

/// The unsubscribe function URL's request (the `events/` sample) with this method and token.
pub fn unsubscribe_request(
    method: &str,
    token: &str,
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest {
    let mut r: aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest =
        sample("unsubscribe.url-post.json");
    r.request_context.http.method = Some(method.into());
    r.query_string_parameters
        .insert("token".into(), token.into());
    r
}

/// A `DynamoStore` on fresh tables named `{tag}{pid}-{name}-`, with `shards` timer shards,
/// recording its sends in the table (the tests read them back from there, not from a queue).
pub fn fresh_store(tag: &str, name: &str, shards: u32) -> relance_aws::dynamodb::DynamoStore {
    use relance_aws::dynamodb::DynamoStore;
    let emu = emulator();
    let config = relance_aws::config::AwsConfig::with_prefix(
        &format!("{tag}{}-{name}-", std::process::id()),
        shards,
    );
    emu.runtime
        .block_on(DynamoStore::create_tables(&emu.dynamo, &config))
        .unwrap_or_else(|e| panic!("{e}"));
    DynamoStore::new(
        emu.dynamo.clone(),
        config,
        relance_aws::bridge::Bridge::new(emu.runtime.handle().clone()),
    )
    .recording_sends()
}

/// As [`drain`], polling until something arrives or `seconds` pass (a delayed message).
pub fn drain_after(url: &str, seconds: i64) -> Vec<(String, String)> {
    let start = Utc::now();
    loop {
        let got = drain(url);
        if !got.is_empty() || Utc::now() - start > chrono::TimeDelta::seconds(seconds) {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// What a [`Recording`] dispatch port was handed.
#[derive(Debug, Default)]
pub struct Handed {
    /// Messages for the step queue.
    pub step: Vec<relance_aws::sqs::Outgoing>,
    /// Pages for the launch queue.
    pub launch: Vec<relance_aws::sqs::Outgoing>,
    /// The detail-types of the events published.
    pub published: Vec<String>,
}

/// A dispatch port that records what it is handed (its clones share the record, so one can
/// be given to a store and read afterwards); a launch queue only when asked.
#[derive(Debug, Default, Clone)]
pub struct Recording {
    launch_queue: bool,
    handed: std::sync::Arc<std::sync::Mutex<Handed>>,
    step_requests: std::sync::Arc<std::sync::Mutex<StepRequests>>,
}

/// The step queue's requests a [`Recording`] counted, and what it does to some of them.
#[derive(Debug, Default)]
struct StepRequests {
    /// Requests so far (the next one's number).
    count: usize,
    /// Numbers of the requests that fail (nothing recorded).
    failing: Vec<usize>,
    /// Numbers of the requests that take this long before they go.
    slow: Vec<(usize, std::time::Duration)>,
}

impl Recording {
    /// One with a launch queue.
    pub fn with_launch_queue() -> Recording {
        Recording {
            launch_queue: true,
            ..Recording::default()
        }
    }

    /// What it was handed so far.
    pub fn handed(&self) -> std::sync::MutexGuard<'_, Handed> {
        self.handed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The step queue's request number `n` (from 0, counting every request of up to ten
    /// messages) fails.
    pub fn fail_step_request(&self, n: usize) {
        self.step_requests().failing.push(n);
    }

    /// The step queue's request number `n` takes `time` before it goes.
    pub fn slow_step_request(&self, n: usize, time: std::time::Duration) {
        self.step_requests().slow.push((n, time));
    }

    fn step_requests(&self) -> std::sync::MutexGuard<'_, StepRequests> {
        self.step_requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl relance_aws::dispatch::Dispatch for Recording {
    fn channel_ready(
        &self,
        _: relance_core::scenario::Channel,
    ) -> Result<(), relance_aws::error::DispatchError> {
        Ok(())
    }

    fn to_channel(
        &self,
        _: relance_core::scenario::Channel,
        _: &[relance_aws::sqs::Outgoing],
    ) -> Result<(), relance_aws::error::DispatchError> {
        Ok(())
    }

    fn to_step_queue(
        &self,
        messages: &[relance_aws::sqs::Outgoing],
    ) -> Result<(), relance_aws::error::DispatchError> {
        let (failing, slow) = {
            let mut requests = self.step_requests();
            let n = requests.count;
            requests.count += 1;
            let slow = requests.slow.iter().find(|(k, _)| *k == n).map(|(_, d)| *d);
            (requests.failing.contains(&n), slow)
        };
        if let Some(time) = slow {
            std::thread::sleep(time);
        }
        if failing {
            return Err(relance_aws::error::SqsError::new("SendMessageBatch", "refused").into());
        }
        self.handed().step.extend_from_slice(messages);
        Ok(())
    }

    fn has_launch_queue(&self) -> bool {
        self.launch_queue
    }

    fn to_launch_queue(
        &self,
        messages: &[relance_aws::sqs::Outgoing],
    ) -> Result<(), relance_aws::error::DispatchError> {
        self.handed().launch.extend_from_slice(messages);
        Ok(())
    }

    fn publish(&self, events: &[(String, Value)]) -> Result<(), relance_aws::error::DispatchError> {
        let mut handed = self.handed();
        handed
            .published
            .extend(events.iter().map(|(t, _)| t.clone()));
        Ok(())
    }
}
