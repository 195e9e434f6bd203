//! The CLI's writes to stdout and stderr, made safe against a closed pipe: `fgvc train 2>&1 | head -1`
//! closes both after one line, and Rust ignores SIGPIPE, so a plain `println!` would panic and the log
//! would error mid-run. Here output the reader no longer wants is dropped and the work goes on.

use std::io::{self, Write};

/// Writes `text` to stdout. A closed pipe (the reader has exited) drops it silently; other errors are
/// returned.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `println!` through [`print()`]: `outln!("x = {x}")?` writes a line, dropped if stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// The log's writer: stderr, with every write error ignored, so that a closed or failing stderr never
/// stops a run (the log is lost, the run directory is not).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}
