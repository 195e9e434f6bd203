//! Streaming HTTP(S) downloads that resume, fall back to mirrors and verify what they fetched.
//!
//! A download goes to `<file>.part` next to its destination. When a `.part` exists, the next request asks
//! for the rest with an HTTP `Range` header; a server that answers with the whole file (status 200) is
//! followed from byte zero. A dropped connection is resumed a few times in place. The finished file is
//! checked against its expected size and hashes before it is renamed to its final name; a mismatch deletes
//! it and tries the next mirror.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};

/// What a file must match. Every field is optional; the size is checked first because it is cheap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: Option<u64>,
    /// MD5, hex.
    pub md5: Option<String>,
    /// SHA-256, hex.
    pub sha256: Option<String>,
    /// The first hex digits of the SHA-256 (torchvision's file names carry them).
    pub sha256_prefix: Option<String>,
}

/// Hashes `path` and checks it against `expected`.
pub fn verify(path: &Path, expected: &Expected) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if let Some(size) = expected.size {
        if len != size {
            bail!("{}: size is {len} bytes, expected {size}", path.display());
        }
    }
    if expected.md5.is_none() && expected.sha256.is_none() && expected.sha256_prefix.is_none() {
        return Ok(());
    }
    let mut file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    let md5 = hex(&md5.finalize());
    let sha = hex(&sha.finalize());
    if let Some(want) = &expected.md5 {
        if !md5.eq_ignore_ascii_case(want) {
            bail!(
                "{}: checksum mismatch: md5 is {md5}, expected {want}",
                path.display()
            );
        }
    }
    if let Some(want) = &expected.sha256 {
        if !sha.eq_ignore_ascii_case(want) {
            bail!(
                "{}: checksum mismatch: sha256 is {sha}, expected {want}",
                path.display()
            );
        }
    }
    if let Some(want) = &expected.sha256_prefix {
        if !sha.starts_with(&want.to_ascii_lowercase()) {
            bail!(
                "{}: checksum mismatch: sha256 is {sha}, expected it to start with {want}",
                path.display()
            );
        }
    }
    Ok(())
}

/// A transport error without the URL (the caller names the source already).
fn transport(t: &ureq::Transport) -> String {
    match t.message() {
        Some(m) => format!("{}: {m}", t.kind()),
        None => t.kind().to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `.part` file a download of `dest` is written to.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads files over HTTP(S) with resume, mirrors and verification.
pub struct Downloader {
    agent: ureq::Agent,
    /// Hide progress bars and messages (tests).
    pub quiet: bool,
    /// How many times one source may be resumed after a dropped connection before moving on.
    pub max_resumes: usize,
}

impl Default for Downloader {
    fn default() -> Self {
        Self::new()
    }
}

/// What one source attempt ended with.
enum Outcome {
    Done,
    /// The connection dropped; `.part` holds what arrived.
    Interrupted(String),
}

impl Downloader {
    /// A downloader with 30 s connect and 60 s read timeouts.
    pub fn new() -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("fgvc-xtask/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            quiet: false,
            max_resumes: 5,
        }
    }

    fn say(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// Makes `dest` a verified copy of the file behind `urls` (tried in order). An existing `dest` that
    /// verifies is kept; one that does not is replaced. A partial `<dest>.part` from an earlier run is
    /// resumed.
    pub fn fetch(&self, urls: &[String], dest: &Path, expected: &Expected) -> Result<()> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if dest.exists() {
            match verify(dest, expected) {
                Ok(()) => {
                    self.say(format!("{name}: already present and verified"));
                    return Ok(());
                }
                Err(e) => {
                    self.say(format!("{name}: present but {e:#}; downloading it again"));
                    fs::remove_file(dest)
                        .with_context(|| format!("removing {}", dest.display()))?;
                }
            }
        }
        if urls.is_empty() {
            bail!("{name}: no download source is known");
        }
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let part = part_path(dest);
        let mut failures = Vec::new();
        for url in urls {
            match self.fetch_from(url, &part, expected) {
                Ok(()) => {
                    self.say(format!("{name}: verifying"));
                    match verify(&part, expected) {
                        Ok(()) => {
                            fs::rename(&part, dest)
                                .with_context(|| format!("renaming {}", part.display()))?;
                            self.say(format!("{name}: done"));
                            return Ok(());
                        }
                        Err(e) => {
                            // A wrong file must not be resumed by the next source: start it from zero.
                            let _ = fs::remove_file(&part);
                            self.say(format!("{name}: {e:#}; deleted"));
                            failures.push(format!("{url}: {e:#} (deleted)"));
                        }
                    }
                }
                Err(e) => {
                    self.say(format!("{name}: {url}: {e:#}"));
                    failures.push(format!("{url}: {e:#}"));
                }
            }
        }
        let kept = if part.exists() {
            format!(
                "\nthe partial download {} is kept; run again to resume it",
                part.display()
            )
        } else {
            String::new()
        };
        Err(anyhow!(
            "{name}: every source failed:\n  - {}{kept}",
            failures.join("\n  - ")
        ))
    }

    /// Downloads `url` into `part`, resuming what is there, until complete (not yet verified).
    fn fetch_from(&self, url: &str, part: &Path, expected: &Expected) -> Result<()> {
        let mut resumes = 0;
        loop {
            match self.attempt(url, part, expected)? {
                Outcome::Done => return Ok(()),
                Outcome::Interrupted(why) => {
                    resumes += 1;
                    if resumes > self.max_resumes {
                        bail!("connection lost {resumes} times, last: {why}");
                    }
                    self.say(format!(
                        "connection lost ({why}); resuming ({resumes}/{})",
                        self.max_resumes
                    ));
                    std::thread::sleep(Duration::from_millis(200 * resumes as u64));
                }
            }
        }
    }

    /// One request: resume from the current `.part` length where possible.
    fn attempt(&self, url: &str, part: &Path, expected: &Expected) -> Result<Outcome> {
        let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = expected.size {
            if have == size {
                return Ok(Outcome::Done);
            }
            if have > size {
                fs::remove_file(part).with_context(|| format!("removing {}", part.display()))?;
                have = 0;
            }
        }
        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                // The server cannot serve the rest: the partial file is unusable, start over.
                self.say("the server refused to resume (HTTP 416); starting again from zero");
                fs::remove_file(part).with_context(|| format!("removing {}", part.display()))?;
                return Ok(Outcome::Interrupted("HTTP 416 on resume".into()));
            }
            Err(ureq::Error::Status(code, r)) => bail!("HTTP {code} {}", r.status_text()),
            // Resuming a partial download is worth a retry; a source that cannot be reached at all is not.
            Err(ureq::Error::Transport(t)) if have > 0 => {
                return Ok(Outcome::Interrupted(transport(&t)))
            }
            Err(ureq::Error::Transport(t)) => bail!("{}", transport(&t)),
        };
        let (mut file, start) = match response.status() {
            206 => {
                let range = response.header("Content-Range").unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    bail!("the server answered range {have}- with `Content-Range: {range}`");
                }
                let f = OpenOptions::new()
                    .append(true)
                    .open(part)
                    .with_context(|| format!("{}", part.display()))?;
                (f, have)
            }
            200 => {
                if have > 0 {
                    self.say("the server does not support resuming; starting again from zero");
                }
                (
                    File::create(part).with_context(|| format!("{}", part.display()))?,
                    0,
                )
            }
            code => bail!("unexpected HTTP status {code}"),
        };
        let length: Option<u64> = response
            .header("Content-Length")
            .and_then(|v| v.parse().ok());
        let total = length.map(|l| l + start).or(expected.size);
        if let (Some(total), Some(size)) = (total, expected.size) {
            if total != size {
                bail!("the server offers {total} bytes, expected {size}");
            }
        }
        let bar = self.progress(total, start, part);
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = start;
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    file.write_all(&buf[..n])
                        .with_context(|| format!("writing {}", part.display()))?;
                    received += n as u64;
                    bar.set_position(received);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(e.to_string()),
            }
        };
        file.flush()
            .with_context(|| format!("writing {}", part.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", part.display()))?;
        bar.finish_and_clear();
        if let Some(why) = outcome {
            return Ok(Outcome::Interrupted(why));
        }
        match total {
            Some(total) if received < total => Ok(Outcome::Interrupted(format!(
                "got {received} of {total} bytes"
            ))),
            _ => Ok(Outcome::Done),
        }
    }

    fn progress(&self, total: Option<u64>, start: u64, part: &Path) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let name = part
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string());
        bar.set_style(style);
        bar.set_message(name.unwrap_or_default());
        bar.set_position(start);
        bar
    }
}
