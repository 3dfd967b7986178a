//! End to end, persistence: the running configuration is saved in the state directory after
//! every change and restored at start; a corrupt state stops the start. Needs root.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{Topo, VIP, Wvs, wvs_bin};

fn service(reals: &[u8]) -> String {
    let mut c =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n");
    for r in reals {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{r}:80\"\n");
    }
    c
}

#[test]
fn changes_are_saved_and_restored_and_a_corrupt_state_stops_the_start() {
    let topo = Topo::new("state", false);
    let state_dir = topo.dir.join("state");
    let state_file = state_dir.join("wvs-state.toml");
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, service(&[1, 2, 3])).expect("config");
    let sd = state_dir.to_str().expect("path");

    let mut wvs = Wvs::start_with(&topo, Some(&cfg), &["--state-dir", sd]);
    let saved = std::fs::read_to_string(&state_file).expect("state saved at start");
    assert_eq!(saved.matches("[[service.real]]").count(), 3, "{saved}");
    wvs.reload(&cfg, &service(&[1, 2]));
    let saved = std::fs::read_to_string(&state_file).expect("state");
    assert_eq!(
        saved.matches("[[service.real]]").count(),
        2,
        "saved after the change: {saved}"
    );
    assert!(!saved.contains("198.19.0.13"));
    assert!(wvs.stop().success());

    // Restart from the state alone: the reloaded configuration is back.
    let _wvs = Wvs::start_with(&topo, None, &["--state-dir", sd]);
    let t = Topo::tally((0..30).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("rs1".to_string(), 15), ("rs2".to_string(), 15)]
    );
    drop(_wvs);

    // A corrupt state file is an error, not an empty configuration.
    std::fs::write(&state_file, "[[service]]\nprotocol = 'tcp'\naddress = ").expect("corrupt");
    let err = topo.wvs_refused(&["--state-dir".as_ref(), sd.as_ref()]);
    assert!(err.contains("corrupt"), "{err}");
    let tables = topo.exec("lb", &["nft", "list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "",
        "nothing installed"
    );
}

#[test]
fn a_first_start_without_config_has_no_services() {
    // Like IPVS, wvs invents nothing: an empty state directory and no --config is an empty
    // table, which `wvs adm` shows and which the state then records.
    let topo = Topo::new("empty", false);
    let mut wvs = Wvs::start(&topo, None);
    let list = wvs.adm_ok(&["-L", "-n"]);
    assert_eq!(
        list.lines().count(),
        3,
        "only ipvsadm's three header lines: {list}"
    );
    assert!(
        wvs.log_text().contains("starting with no services"),
        "{}",
        wvs.log_text()
    );
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), "");
    let out = topo.exec(
        "cli",
        &["curl", "-sS", "-m", "2", &format!("http://{VIP}/")],
    );
    assert!(!out.status.success(), "nothing answers on the VIP");
    assert!(wvs.stop().success());
}

/// One wvs per state directory: a second one is refused with the first one's pid, before
/// it touches anything, and the first goes on serving.
#[test]
fn a_second_wvs_on_the_same_state_directory_is_refused() {
    let topo = Topo::new("lock", false);
    let state = topo.dir.join("state-lock");
    let state_s = state.to_str().expect("path");
    let w = Wvs::start_with(&topo, Some(common::example()), &["--state-dir", state_s]);
    let out = topo.exec(
        "lb",
        &[
            wvs_bin(),
            "run",
            "--iface",
            "c0",
            "--iface",
            "s0",
            "--state-dir",
            state_s,
            "--api",
            "127.0.0.1:9089",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("in use by another wvs") && err.contains(&format!("pid {}", w.pid())),
        "{err}"
    );
    let t = Topo::tally((0..3).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.len(), 3, "the first one still serves: {t:?}");
    // A directory others may write is refused too.
    let open = topo.dir.join("state-open");
    std::fs::create_dir_all(&open).expect("dir");
    Command::new("chmod")
        .args(["777", open.to_str().expect("path")])
        .status()
        .expect("chmod");
    let out = topo.exec(
        "lb",
        &[
            wvs_bin(),
            "run",
            "--iface",
            "c0",
            "--state-dir",
            open.to_str().expect("path"),
            "--api",
            "127.0.0.1:9089",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("use 0700"), "{err}");
}

/// A tmpfs mounted for a test, unmounted when dropped (also when the test fails).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs");
        Self(at.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A valid saved state on a disk that became read-only, or full, is served: wvs starts
/// with a warning, forwards, and refuses only the changes it cannot save.
#[test]
fn a_read_only_or_full_state_disk_serves_the_saved_state_and_refuses_changes() {
    let topo = Topo::new("stro", false);
    let state_dir = topo.dir.join("state");
    let mount = Mount::tmpfs(&state_dir, "4m");
    let sd = state_dir.to_str().expect("path");
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, service(&[1, 2, 3])).expect("config");
    let mut w = Wvs::start_with(&topo, Some(&cfg), &["--state-dir", sd]);
    assert!(w.stop().success());
    let other = "198.18.100.2:80";
    for (how, why) in [("ro", "Read-only"), ("rw", "No space")] {
        mount.remount(how);
        if how == "rw" {
            // Fill it: the saved state stays, nothing more fits.
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=64k", "status=none"])
                .arg(format!("of={}/fill", state_dir.display()))
                .status();
        }
        let w = Wvs::start_with(&topo, Some(&cfg), &["--state-dir", sd]);
        assert!(
            w.log_text().contains("cannot save the state at start")
                || w.log_text().contains("read-only"),
            "{how}: {}",
            w.log_text()
        );
        let t = Topo::tally((0..3).map(|_| topo.curl(&format!("http://{VIP}/"))));
        assert_eq!(t.len(), 3, "{how}: the saved state is served: {t:?}");
        let (code, _, err) = w.adm(&["-A", "-t", other, "-s", "rr"]);
        assert_ne!(code, 0, "{how}: a change that cannot be saved is refused");
        assert!(err.contains(why), "{how}: {err}");
        let list = w.adm_ok(&["-L", "-n"]);
        assert!(!list.contains(other), "{how}: nothing of it runs: {list}");
    }
}

/// SIGHUP applies the file's own changes and keeps `wvs adm`'s edits elsewhere: an
/// unchanged file changes nothing (the edits stay), an edited file changes what it edits.
#[test]
fn sighup_applies_the_files_changes_and_keeps_adms_edits() {
    let topo = Topo::new("hup", false);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, service(&[1, 2, 3])).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    let other = "198.18.100.2:80";
    w.adm_ok(&["-A", "-t", other, "-s", "rr"]);
    w.adm_ok(&["--set", "900", "0", "0"]);
    w.adm_ok(&[
        "-e",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.13:80",
        "-m",
        "-w",
        "0",
    ]);
    // The file as it was: nothing changes.
    w.reload(&cfg, &service(&[1, 2, 3]));
    let list = w.adm_ok(&["-L", "-n"]);
    assert!(list.contains(other), "the added service stays: {list}");
    assert!(
        list.lines()
            .any(|l| l.contains("198.19.0.13:80") && l.contains(" 0 ")),
        "the edited weight stays: {list}"
    );
    assert!(w.adm_ok(&["-L", "--timeout"]).contains("900"));
    // The file drops a server of its service: that service becomes the file's, the rest
    // stays.
    w.reload(&cfg, &service(&[1, 2]));
    assert!(w.log_text().contains("SIGHUP: service"), "{}", w.log_text());
    let list = w.adm_ok(&["-L", "-n"]);
    assert!(!list.contains("198.19.0.13"), "{list}");
    assert!(list.contains(other), "{list}");
    assert!(w.adm_ok(&["-L", "--timeout"]).contains("900"));
    let t = Topo::tally((0..4).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.len(), 2, "{t:?}");
}
