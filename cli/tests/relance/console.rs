//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, fantoccini) against `relance run`. At 1280 and 390 px wide it logs in by
//! keyboard, opens the scenario list and a scenario, launches it, watches the counts move
//! (a launch made through the API while the page stays open), opens a contact's path, runs
//! test mode, reads the journal, pauses and resumes, and logs out; each page is kept as a
//! screenshot under `target/console-screenshots/`, and the browser's console must stay free
//! of errors (CSP violations, failed loads, script errors). Without `chromedriver` and
//! Chromium (offline machines) it says "skipped" and passes; `.ci/run` installs them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::{API_TOKEN, RunFiles, spawn_run};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the test waits for something the browser or the server will do (a page, a
/// poll of the counts) before it fails: a bound on a hang, not a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

const SCENARIO: &str = "\
id: welcome
name: Welcome series
timezone: UTC
launch: {type: manual}
audience: {all: true}
messages:
  hello: {channel: email, subject: \"Welcome {{ contact.first_name }}\", text: \"Glad you are here\"}
  tips: {channel: email, subject: \"Three tips\", text: \"Tip one\"}
steps:
  - {id: hello, send: hello, next: pause}
  - {id: pause, delay: {after: P2D}, next: tips}
  - {id: tips, send: tips, next: done}
  - {id: done, end: success}
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `chromedriver` on the PATH and Chromium at /usr/bin/chromium, or None.
fn browser() -> Option<PathBuf> {
    if !Path::new(CHROMIUM).exists() {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.exists())
}

/// Where the screenshots go: `target/console-screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One plain HTTP/1.1 request to the API with the bearer token: (status, body).
fn api(port: u16, method: &str, path: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until a TCP port answers (a server starting).
fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// chromedriver's log endpoint (`goog:loggingPrefs` in the capabilities): the browser
/// console's entries since the last call.
#[derive(Debug, Clone)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The browser console's errors (level SEVERE) since the last call.
async fn console_errors(client: &Client) -> Vec<String> {
    let entries = client
        .issue_cmd(BrowserLog)
        .await
        .unwrap_or_else(|e| panic!("chromedriver log endpoint: {e}"));
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

struct Walk<'a> {
    client: &'a Client,
    base: String,
    width: u32,
    shots: PathBuf,
    api_port: u16,
}

impl Walk<'_> {
    async fn shot(&self, name: &str) {
        // The whole page, not only the window: the document's height decides.
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let path = self.shots.join(format!("{name}-{}.png", self.width));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // No page scrolls sideways: wide tables scroll inside their own box.
        let fits = self
            .client
            .execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1;",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            fits,
            Value::Bool(true),
            "{name} scrolls sideways at {} px",
            self.width
        );
        let errors = console_errors(self.client).await;
        assert!(
            errors.is_empty(),
            "{name} at {} px: browser console errors {errors:?}",
            self.width
        );
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .path()
            .to_string()
    }

    /// Waits until the page's `css` element reads `want` (a navigation, or the script's poll).
    async fn until_text(&self, css: &str, want: &str) {
        let start = Instant::now();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && e.text().await.is_ok_and(|t| t.trim() == want)
            {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{css} never read {want:?} (it reads {:?})",
                self.client.find(Locator::Css(css)).await.ok().map(|_| ())
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs in by keyboard only: Tab until the token field has focus, type, Enter.
    async fn login(&self) {
        self.client
            .goto(&format!("{}/", self.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            self.path().await,
            "/login",
            "a page without a session leads to the login"
        );
        self.shot("login").await;
        let mut tabs = 0;
        loop {
            let active = self
                .client
                .active_element()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if active.attr("id").await.ok().flatten().as_deref() == Some("token") {
                active
                    .send_keys(&format!("{API_TOKEN}\u{e007}"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                break;
            }
            assert!(tabs < 10, "Tab never reached the token field");
            active
                .send_keys("\u{e004}")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tabs += 1;
        }
        self.until_text("h1", "Scenarios").await;
    }

    async fn entered(&self) -> u64 {
        self.text("#count-entered")
            .await
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("#count-entered: {e}"))
    }

    async fn run(&self, round: usize) {
        self.login().await;
        self.shot("scenarios").await;
        // The list links to the scenario.
        self.click("a[href='/scenarios/welcome']").await;
        self.until_text("#status", "active").await;
        // Launch: the page comes back saying so, with the audience entered.
        let before = self.entered().await;
        self.click("#launch").await;
        self.until_text(".notice", "Launched.").await;
        let after = self.entered().await;
        if round == 0 {
            assert!(
                after > before,
                "the launch entered nobody ({before} → {after})"
            );
        }
        // The counts move without a reload: a contact added and launched through the API
        // shows up when the script polls.
        let id = format!("late-{}", self.width);
        let (status, body) = api(
            self.api_port,
            "POST",
            "/v1/contacts",
            &json!({"contact": {"id": id, "email": format!("{id}@example.org"), "first_name": "Late"}}),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = api(
            self.api_port,
            "POST",
            "/v1/launch",
            &json!({"scenario": "welcome", "contacts": [id]}),
        );
        assert_eq!(status, 200, "{body}");
        self.until_text("#count-entered", &(after + 1).to_string())
            .await;
        self.shot("scenario").await;
        // A contact's path, from the scenario's recent records (read again).
        self.client
            .refresh()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.click(&format!("a[href='/contacts/{id}']")).await;
        self.until_text("h1", &format!("Contact {id}")).await;
        let page = self.client.source().await.unwrap_or_else(|e| panic!("{e}"));
        for kind in ["kind-entered", "kind-sent", "kind-waiting"] {
            assert!(page.contains(kind), "{kind} missing from the path");
        }
        self.shot("contact").await;
        // The journal.
        self.click("nav a[href='/journal']").await;
        self.until_text("h1", "Journal").await;
        self.shot("journal").await;
        // Test mode: two profiles, each one's path.
        self.client
            .goto(&format!("{}/scenarios/welcome/test", self.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let profiles = self
            .client
            .find(Locator::Id("profiles"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        profiles
            .send_keys("{\"id\": \"t1\", \"email\": \"t1@example.org\"}\n{\"id\": \"t2\"}")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.click("#run-test").await;
        self.until_text("#h-results", "Paths").await;
        let page = self.client.source().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(page.contains("Simulated path of t1") && page.contains("Simulated path of t2"));
        self.shot("test-mode").await;
        // Pause, then resume.
        self.client
            .goto(&format!("{}/scenarios/welcome", self.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.click("#pause").await;
        self.until_text("#status", "paused").await;
        self.shot("scenario-paused").await;
        self.click("#activate").await;
        self.until_text("#status", "active").await;
        // Logging out ends the session: the list leads to the login again.
        self.click(".logout button").await;
        self.until_text("h1", "Log in").await;
        self.client
            .goto(&format!("{}/", self.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(self.path().await, "/login");
        let errors = console_errors(self.client).await;
        assert!(errors.is_empty(), "browser console errors {errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_headless_browser() {
    let Some(chromedriver) = browser() else {
        eprintln!(
            "console browser test skipped: chromedriver or {CHROMIUM} missing (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("relance-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let scenario = dir.join("welcome.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap_or_else(|e| panic!("{e}"));
    let contacts = dir.join("contacts.jsonl");
    std::fs::write(
        &contacts,
        "{\"id\": \"ada\", \"email\": \"ada@example.org\", \"first_name\": \"Ada\"}\n{\"id\": \"grace\", \"email\": \"grace@example.org\", \"first_name\": \"Grace\"}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let (run, _lines) = spawn_run(
        &RunFiles {
            db: &dir.join("r.db"),
            outbox: &dir.join("outbox.jsonl"),
            scenario: &scenario,
            contacts: Some(&contacts),
            log: &dir.join("run.log"),
        },
        port,
        "info",
    );
    let _run = Killed(run);
    wait_for_port(port, "relance run");
    let driver_port = free_port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()));
    let _driver = Killed(driver);
    wait_for_port(driver_port, "chromedriver");
    let profile = dir.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": CHROMIUM, "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars",
            format!("--user-data-dir={}", profile.display()),
        ]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .unwrap_or_else(|e| panic!("chromedriver session: {e}"));
    let shots = screenshot_dir();
    for (round, width) in [1280u32, 390].into_iter().enumerate() {
        client
            .set_window_size(width, 1000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let walk = Walk {
            client: &client,
            base: format!("http://127.0.0.1:{port}"),
            width,
            shots: shots.clone(),
            api_port: port,
        };
        walk.run(round).await;
    }
    let _ = client.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("console screenshots in {}", shots.display());
}
