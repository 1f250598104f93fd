//! A pid file is evidence, not proof: before a client signals the pid a pid file names, it makes
//! sure that this process is the start_server that holds that very file. The file's lock says
//! some process holds the file; the process's own open files say which one. A file another user
//! could have written (or whose directory another user could swap, when the client runs as
//! root) is not believed. Perl's start_server signals whatever pid the file names.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::vocab::Pid;
use crate::vocab::trust;

/// Fails unless process `pid`, named by the pid file at `path` (open as `file`), holds that
/// file open, and the file belongs to root or to that process's user.
pub fn confirm(file: &File, pid: Pid, path: &Path) -> Result<()> {
    let shown = path.display();
    let refuse = |why: String| {
        Error::runtime(format!(
            "not signalling pid {pid} from pid file {shown}: {why}: check which start_server \
             runs there, and stop it yourself if need be"
        ))
    };
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("the file cannot be examined ({e})")))?;
    if nix::unistd::geteuid().is_root()
        && let Some(why) = trust::unsafe_path(path)
    {
        return Err(refuse(format!(
            "another user could have put it there ({why})"
        )));
    }
    let owner = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(|_| refuse("no such process".to_string()))?
        .uid();
    if meta.uid() != 0 && meta.uid() != owner {
        return Err(refuse(format!(
            "the file belongs to uid {}, the process to uid {owner}",
            meta.uid()
        )));
    }
    if !holds(pid, meta.dev(), meta.ino()) {
        return Err(refuse(
            "that process does not hold the file open, so it is not the start_server that \
             wrote it"
                .to_string(),
        ));
    }
    Ok(())
}

/// Whether process `pid` has the file `(dev, ino)` open.
fn holds(pid: Pid, dev: u64, ino: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .any(|meta| meta.dev() == dev && meta.ino() == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_believed_only_with_the_file_open() {
        let dir = std::env::temp_dir().join(format!("ss-evidence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pid");
        std::fs::write(&path, "1\n").unwrap();
        let file = File::open(&path).unwrap();
        let me = std::process::id() as Pid;
        assert!(confirm(&file, me, &path).is_ok(), "we hold it open");
        let parent = std::os::unix::process::parent_id() as Pid;
        let e = confirm(&file, parent, &path).unwrap_err().to_string();
        assert!(e.contains("does not hold the file open"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
