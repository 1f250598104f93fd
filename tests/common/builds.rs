//! Another build of the binary under test, for upgrades: a copy with a build tag written after
//! its marker, so that it reports `VERSION+TAG` (as a packager's stamp would).

use std::fs;
use std::path::Path;

use super::bin;

const TAG_MARKER: &[u8] = b"SERVER_STARTER_BUILD_TAG=";

/// The tag [`newer_build`] writes in.
pub const NEW_TAG: &str = "upgrade-test";

/// The version [`newer_build`] reports.
pub fn new_version() -> String {
    format!("{}+{NEW_TAG}", env!("CARGO_PKG_VERSION"))
}

/// The binary under test with [`NEW_TAG`] written after its build tag marker.
pub fn newer_build() -> Vec<u8> {
    let mut binary = fs::read(bin()).expect("read the binary");
    let mut patched = 0;
    let mut at = 0;
    while let Some(found) = binary[at..]
        .windows(TAG_MARKER.len())
        .position(|w| w == TAG_MARKER)
    {
        let start = at + found + TAG_MARKER.len();
        if binary[start] == 0 {
            binary[start..start + NEW_TAG.len()].copy_from_slice(NEW_TAG.as_bytes());
            patched += 1;
        }
        at = start;
    }
    assert!(patched > 0, "no build tag marker in the binary");
    binary
}

/// Puts an executable file at `path` atomically (as a package manager does: the running file
/// keeps its inode).
pub fn install(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    super::write_executable(&temporary, contents);
    fs::rename(&temporary, path).expect("install the new binary");
}
