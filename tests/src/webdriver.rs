//! A small W3C WebDriver client for the console tests: starts `chromedriver` on a
//! loopback port, drives headless Chromium over HTTP and ends both on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::Engine;
use serde_json::{json, Value};

/// Key of an element reference in WebDriver responses.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long element lookups and waits retry before failing.
const WAIT: Duration = Duration::from_secs(15);

/// Paths of the browser and its driver, from `FOLIO_CHROMIUM` and `FOLIO_CHROMEDRIVER`
/// or the Debian packages' locations.
pub fn browser_paths() -> (PathBuf, PathBuf) {
    let from_env = |name: &str, default: &str| {
        std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    (
        from_env("FOLIO_CHROMIUM", "/usr/bin/chromium"),
        from_env("FOLIO_CHROMEDRIVER", "/usr/bin/chromedriver"),
    )
}

/// A browser session; the driver process is killed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
}

/// A reference to an element on the current page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    ///
    /// # Errors
    /// Fails when the driver does not start or refuses the session.
    pub async fn start(chromium: &Path, chromedriver: &Path) -> anyhow::Result<Browser> {
        let port = free_port()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", chromedriver.display()))?;
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            profile,
        };
        browser.wait_for_driver().await?;
        let session = browser.new_session(chromium).await?;
        browser.base = format!("{}/session/{session}", browser.base);
        Ok(browser)
    }

    async fn wait_for_driver(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let status = self.http.get(format!("{}/status", self.base)).send().await;
            if let Ok(response) = status {
                let body: Value = response.json().await?;
                if body["value"]["ready"] == true {
                    return Ok(());
                }
            }
            ensure!(
                started.elapsed() < WAIT,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn new_session(&self, chromium: &Path) -> anyhow::Result<String> {
        let profile = self.profile.path().display().to_string();
        // Without the background-networking flags Chromium tries to reach Google's hosts,
        // which this machine's closed network refuses.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={profile}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let reply = self.call("POST", "/session", Some(capabilities)).await?;
        reply["sessionId"]
            .as_str()
            .map(str::to_owned)
            .context("chromedriver answered without a sessionId")
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("WebDriver {method} {path}: {status} {}", body["value"]);
        }
        Ok(body["value"].clone())
    }

    /// Opens a URL.
    ///
    /// # Errors
    /// Fails when the browser refuses.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({"url": url}))).await?;
        Ok(())
    }

    /// Waits for the first element matching a CSS selector.
    ///
    /// # Errors
    /// Fails when no element matches within the wait.
    pub async fn find(&self, selector: &str) -> anyhow::Result<Element> {
        let started = Instant::now();
        loop {
            let body = json!({"using": "css selector", "value": selector});
            match self.call("POST", "/element", Some(body)).await {
                Ok(found) => {
                    let id = found[ELEMENT_KEY]
                        .as_str()
                        .context("no element reference")?;
                    return Ok(Element(id.to_owned()));
                }
                Err(error) if started.elapsed() > WAIT => {
                    return Err(error.context(format!("no element matches {selector:?}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Types text into an element.
    ///
    /// # Errors
    /// Fails when the element cannot take input.
    pub async fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let Element(id) = self.find(selector).await?;
        let path = format!("/element/{id}/value");
        self.call("POST", &path, Some(json!({"text": text})))
            .await?;
        Ok(())
    }

    /// Clicks an element.
    ///
    /// # Errors
    /// Fails when the element is missing or cannot be clicked.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let Element(id) = self.find(selector).await?;
        self.call("POST", &format!("/element/{id}/click"), None)
            .await?;
        Ok(())
    }

    /// Returns the visible text of the first element matching a selector.
    ///
    /// # Errors
    /// Fails when no element matches.
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let Element(id) = self.find(selector).await?;
        let text = self
            .call("GET", &format!("/element/{id}/text"), None)
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the text of the element matching `selector` contains `wanted`.
    ///
    /// # Errors
    /// Fails with the last text seen when it never does.
    pub async fn wait_for_text(&self, selector: &str, wanted: &str) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let text = self.text(selector).await.unwrap_or_default();
            if text.contains(wanted) {
                return Ok(text);
            }
            if started.elapsed() > WAIT {
                bail!("{selector:?} never showed {wanted:?}; last text: {text:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the location's fragment, which switches the console's view.
    ///
    /// # Errors
    /// Fails when the script cannot run.
    pub async fn go_to_view(&self, fragment: &str) -> anyhow::Result<()> {
        let body = json!({"script": "location.hash = arguments[0];", "args": [fragment]});
        self.call("POST", "/execute/sync", Some(body)).await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the window.
    ///
    /// # Errors
    /// Fails when the browser cannot take it or the file cannot be written.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let encoded = self.call("GET", "/screenshot", None).await?;
        let text = encoded.as_str().context("screenshot is not a string")?;
        let png = base64::engine::general_purpose::STANDARD.decode(text)?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing the driver alone would leave it.
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let _ = reqwest::Client::new().delete(url).send().await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
