//! What the end-to-end tests share: `lanyard dev` as a process, the CLI as
//! a process, and polling with a deadline.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM by pid and wait.
    #[allow(dead_code)]
    pub fn stop(mut self) -> Result<std::process::ExitStatus, std::io::Error> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()?;
        self.0.wait()
    }
}

/// Starts `lanyard dev` on `dir` with `extra` arguments and `env`, and
/// waits for its `dev.json`.
pub fn dev_with(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<(Proc, Value), Box<dyn std::error::Error>> {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--data-dir",
        &dir.display().to_string(),
        "--output",
        "json",
        "dev",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(extra)
    .env("LANYARD_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(info) = std::fs::read_to_string(dir.join("dev.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            if info["pid"].as_u64() == Some(u64::from(child.id())) {
                return Ok((Proc(child), info));
            }
        }
        if Instant::now() > deadline {
            return Err("lanyard dev did not start within 60s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `lanyard --data-dir DIR ARGS`.
pub fn lanyard(dir: &Path, args: &[&str]) -> Result<Output, std::io::Error> {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("LANYARD_LOG", "warn")
        .output()
}

/// The JSON a successful command printed; its stderr otherwise.
pub fn ok_json(out: &Output) -> Result<Value, Box<dyn std::error::Error>> {
    if !out.status.success() {
        return Err(format!(
            "lanyard failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// This process's uid.
pub fn uid() -> Result<u32, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no uid".into())
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
