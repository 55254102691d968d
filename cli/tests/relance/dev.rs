//! The local AWS path end to end, as a developer uses it: `relance dev up`, `relance dev run`
//! in the background, a scenario put and activated with `--endpoint`, a contact event sent with
//! a plain SDK call (EventBridge PutEvents), and the email and SMS read back from the emulator.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::emulator::{emulator_read, endpoint};

fn relance(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_relance"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "relance {args:?}: {text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// How many emails the emulator holds for an address.
fn emails_to(v: &serde_json::Value, address: &str) -> usize {
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

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_up_dev_run_and_a_plain_sdk_call_send_an_email_and_an_sms() {
    let Some(url) = endpoint() else {
        return;
    };
    let prefix = format!("d{}-", std::process::id());
    let up = relance(&["dev", "up", "--endpoint", &url, "--prefix", &prefix]);
    assert!(
        up.contains(&format!("RELANCE_STATE_TABLE={prefix}state")),
        "{up}"
    );
    let dir = std::env::temp_dir().join(format!("relance-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let scenario = dir.join("welcome.yaml");
    std::fs::write(
        &scenario,
        "id: dev-welcome\nlaunch: {type: trigger, event: contact.created}\nmessages:\n  hi: {channel: email, subject: \"Welcome {{ contact.first_name }}\", text: \"Hello\"}\n  text: {channel: sms, text: \"Welcome aboard\"}\nsteps:\n  - {id: hi, send: hi, next: text}\n  - {id: text, send: text, next: done}\n  - {id: done, end: success}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = scenario.to_string_lossy().into_owned();
    relance(&[
        "scenario",
        "put",
        &path,
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    relance(&[
        "scenario",
        "activate",
        "dev-welcome",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);

    let _host = Kill(
        Command::new(env!("CARGO_BIN_EXE_relance"))
            .args([
                "dev",
                "run",
                "--endpoint",
                &url,
                "--prefix",
                &prefix,
                "--from",
                "news@example.com",
                "--tick-every",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    );

    // The application's side: one PutEvents call with the documented detail-type and detail.
    let address = format!("{prefix}zoe@example.com");
    let phone = format!("+3361{}", std::process::id() % 10_000_000 + 10_000_000);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio.block_on(async {
        let config = aws_config::load_from_env().await;
        let events = aws_sdk_eventbridge::Client::new(&config);
        let detail = serde_json::json!({"contact": {"id": "zoe", "email": address, "phone": phone, "first_name": "Zoe"}});
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(format!("{prefix}bus"))
            .source("com.example.shop")
            .detail_type("relance.contact")
            .detail(detail.to_string())
            .build();
        let out = events.put_events().entries(entry).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out.failed_entry_count, 0);
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut email, mut sms) = (false, false);
    while Instant::now() < deadline && !(email && sms) {
        let mails = emulator_read("/_ministack/ses/messages").to_string();
        email = mails.contains(&address) && mails.contains("Welcome Zoe");
        sms = emulator_read("/_ministack/sns/sms-messages")
            .to_string()
            .contains(&phone);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(email, "no email to {address} within 30 s");
    assert!(sms, "no SMS to {phone} within 30 s");
    // The other plain SDK call: SQS SendMessage of a launch page to the launch queue.
    tokio.block_on(async {
        let config = aws_config::load_from_env().await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let queue = sqs
            .get_queue_url()
            .queue_name(format!("{prefix}launch"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let body = serde_json::json!({"scenario": "dev-welcome", "contacts": ["zoe"]}).to_string();
        sqs.send_message()
            .queue_url(queue.queue_url.unwrap_or_default())
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut twice = false;
    while Instant::now() < deadline && !twice {
        twice = emails_to(&emulator_read("/_ministack/ses/messages"), &address) >= 2;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        twice,
        "the launch page did not send a second email within 30 s"
    );
    let journal = relance(&[
        "journal",
        "dev-welcome",
        "--json",
        "--endpoint",
        &url,
        "--prefix",
        &prefix,
    ]);
    let journal: serde_json::Value =
        serde_json::from_str(&journal).unwrap_or_else(|e| panic!("{e}: {journal}"));
    assert_eq!(journal["ends"]["success"], 2, "{journal}");
}
