//! The systemd units in deploy/ pass `systemd-analyze verify` with no warning, with their
//! ExecStart paths (/usr/local/bin/mkv, /opt/mkv/bin/volume) pointed at this build and tree.

mod common;

use common::TempDir;
use std::process::Command;

#[test]
fn systemd_units_verify_without_warnings() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = TempDir::new("units");
    let mut units = Vec::new();
    for name in ["mkv.service", "mkv-volume@.service"] {
        let text = std::fs::read_to_string(format!("{root}/deploy/{name}")).unwrap();
        assert!(text.contains("/usr/local/bin/mkv") || text.contains("/opt/mkv/bin/volume"), "{name}");
        let text =
            text.replace("/usr/local/bin/mkv", env!("CARGO_BIN_EXE_mkv")).replace("/opt/mkv/", &format!("{root}/"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e} (Debian's systemd package; bin/deps installs it)"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // lines about other units (what this machine lacks) are not ours to fix
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("mkv")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify ({}):\n{said}", out.status);
}
