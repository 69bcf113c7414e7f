//! A new user's first two commands, as the README gives them: `dream3d fit refs/`, then
//! `dream3d generate --views 4 --edit "made of gold" -o out.glb`, with both models where the
//! Hugging Face cache keeps them (tiny ones: sd_tiny as SD 2.1, and a tiny MVDream sharing its
//! text encoder, as the real MVDream shares SD 2.1's).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The README's second command, as a user types it.
const GENERATE: [&str; 7] = [
    "generate",
    "--views",
    "4",
    "--edit",
    "made of gold",
    "-o",
    "out.glb",
];

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn fit_then_generate_as_typed() {
    let home = tempfile::tempdir().unwrap();
    let hub = home.path().join("hub");
    let commit = "0123456789abcdef";
    common::copy_dir(
        &common::sd_tiny_dir(),
        &common::hf_snapshot(&hub, "stabilityai/stable-diffusion-2-1", commit),
    );
    common::mvdream::write_sd_tiny_companion(
        &common::hf_snapshot(&hub, "MVDream/MVDream", commit),
        "sd-v2.1-base-4view.safetensors",
    );
    let cwd = tempfile::tempdir().unwrap();
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/refs/spheres");
    common::copy_dir(&refs, &cwd.path().join("refs"));
    let dream3d = |args: &[&str]| {
        let mut cmd = common::dream3d(cwd.path());
        cmd.args(args)
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1");
        cmd
    };

    // Before any fit, generate says what it looked for.
    let early = dream3d(&GENERATE).output().unwrap();
    assert!(!early.status.success());
    assert!(
        stderr(&early).contains("none at dream3d-runs/latest.dist.safetensors"),
        "{}",
        stderr(&early)
    );

    // Two steps instead of fit's 2000 keep the test short; nothing else is added.
    let fit = dream3d(&["fit", "refs/", "--steps", "2"]).output().unwrap();
    common::assert_success(&fit);
    assert!(cwd
        .path()
        .join("dream3d-runs/latest.dist.safetensors")
        .is_file());

    // Images from it with the model it was fitted on, found in the cache; the recorded command
    // pins the cached commit, not the branch name.
    let sample = dream3d(&["sample", "-n", "1", "--steps", "2", "-o", "samples"])
        .output()
        .unwrap();
    common::assert_success(&sample);
    assert!(stderr(&sample).contains("prompt distribution: dream3d-runs/latest.dist.safetensors"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("samples/samples.json")).unwrap())
            .unwrap();
    let command = record["command"].as_str().unwrap();
    assert!(
        command.contains("--model stabilityai/stable-diffusion-2-1 ")
            && command.contains("--revision 0123456789abcdef"),
        "{command}"
    );

    // Exactly as typed. Its 10 000 steps are stopped by Ctrl-C after the first.
    let child = dream3d(&GENERATE).stderr(Stdio::piped()).spawn().unwrap();
    let run = cwd.path().join("dream3d-runs/generate");
    let logged = || std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| !m.is_empty());
    let started = Instant::now();
    while !logged() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "generate logged no step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let generate = common::interrupt(child);
    common::assert_success(&generate);
    let log = stderr(&generate);
    for expected in [
        "prompt distribution: dream3d-runs/latest.dist.safetensors",
        "made of gold",
        "interrupted: checkpoint at step",
    ] {
        assert!(log.contains(expected), "`{expected}` not in:\n{log}");
    }
    assert!(run.join("field.safetensors").is_file(), "{log}");

    // The interrupted run finishes as its message says, here without further steps and without
    // the mesh stage; a field a step or two old is the initial blob, whose surface lies at
    // density 5, not threestudio's 25.
    let finish = dream3d(&[
        "generate",
        "--resume",
        "dream3d-runs/generate",
        "--steps",
        "1",
        "--refine-steps",
        "0",
        "--threshold",
        "5",
        "--resolution",
        "64",
        "--frames",
        "2",
        "-o",
        "out.glb",
    ])
    .output()
    .unwrap();
    common::assert_success(&finish);
    let report = common::validate_gltf(&cwd.path().join("out.glb"));
    assert_eq!(report["numErrors"], 0, "{report}");
}
