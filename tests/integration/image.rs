//! `make image` with the local Docker daemon, when there is one that can reach the base images'
//! registries: the image runs hubferry as its entrypoint, as a non-root user. Without a daemon
//! (CI machines run none) the test says so and checks nothing: the Dockerfile itself is checked
//! by hadolint in `make validate-deploy`.

use std::process::Command;

fn docker(args: &[&str]) -> Option<std::process::Output> {
    Command::new("docker").args(args).output().ok()
}

#[test]
fn make_image_builds_an_image_whose_entrypoint_is_hubferry() {
    if !docker(&["info"]).is_some_and(|out| out.status.success()) {
        eprintln!("no Docker daemon: make image not built");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let image = "hubferry:integration-test";
    let build = Command::new("make")
        .args(["-C", root, "image", &format!("IMAGE={image}")])
        .output()
        .expect("run make image");
    assert!(
        build.status.success(),
        "make image failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let help = docker(&["run", "--rm", image, "--help"]).unwrap();
    assert!(help.status.success(), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--acme-domain"));
    let user = docker(&["image", "inspect", "-f", "{{.Config.User}}", image]).unwrap();
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
    let _ = docker(&["image", "rm", image]);
}
