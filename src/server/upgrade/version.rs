//! This binary's version, as an upgrade in place names it: the crate's version and, when one was
//! written into the binary, a build tag.

/// Marks the build tag in the binary: a packager (or a test) may write a tag of up to
/// [`TAG_LEN`] bytes after it, NUL-padded, in a copy of the binary; the version then reads
/// `0.1.0+TAG`, so two builds of one version can be told apart in an upgrade.
const TAG_MARKER: &[u8; 26] = b"SERVER_STARTER_BUILD_TAG=\0";
const TAG_LEN: usize = 38;

#[used]
static BUILD_TAG: [u8; 64] = {
    let mut tag = [0u8; 64];
    let mut i = 0;
    while i < TAG_MARKER.len() - 1 {
        tag[i] = TAG_MARKER[i];
        i += 1;
    }
    tag
};

/// This binary's version, with its build tag if one was written in.
pub fn version() -> String {
    // SAFETY: reading a static; volatile, so that a tag patched into the file is what is read.
    let tag = unsafe { std::ptr::read_volatile(&BUILD_TAG) };
    let start = TAG_MARKER.len() - 1;
    let value = &tag[start..start + TAG_LEN];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(TAG_LEN)];
    let version = env!("CARGO_PKG_VERSION");
    match std::str::from_utf8(value) {
        Ok(tag) if !tag.is_empty() => format!("{version}+{tag}"),
        _ => version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_has_no_tag_unless_one_is_written_in() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
    }
}
