//! Sharded `sample` (as Slurm job arrays and Kubernetes Indexed Jobs run it): shards given by
//! flag or by the scheduler's variables make the same bytes as one process, skip what is
//! already made, and `collect` finds a broken and a missing image and prints commands that
//! redo them. Runs the tiny Stable Diffusion.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const PROMPT: &str = "a red ball";

/// `dream3d sample` of 6 images of the tiny model with seed 5, into `out` under `cwd`.
fn sample(cwd: &Path, out: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = common::dream3d(cwd);
    cmd.args(["sample", "--prompt", PROMPT, "--steps", "2", "-n", "6"])
        .args(["--seed", "5", "-o", out])
        .args(["--model", common::sd_tiny_dir().to_str().unwrap()])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn collect(dir: &Path) -> Output {
    common::dream3d(dir)
        .args(["collect", "."])
        .output()
        .unwrap()
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn shards_make_what_one_process_makes_and_collect_redoes_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    common::assert_success(&sample(cwd, "whole", &[], &[]));
    // Shard 0 by flag, shard 1 as Slurm's task 2 of --array=1-3, shard 2 as Kubernetes' index.
    common::assert_success(&sample(cwd, "sharded", &["--shard", "0/3"], &[]));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
    ];
    let out = sample(cwd, "sharded", &[], &slurm);
    common::assert_success(&out);
    assert!(
        text_of(&out.stderr).contains("shard 1/3 (Slurm array task)"),
        "{}",
        text_of(&out.stderr)
    );
    let out = sample(
        cwd,
        "sharded",
        &["--shards", "3"],
        &[("JOB_COMPLETION_INDEX", "2")],
    );
    common::assert_success(&out);
    assert!(
        text_of(&out.stderr).contains("shard 2/3 (Kubernetes"),
        "{}",
        text_of(&out.stderr)
    );
    let sharded = cwd.join("sharded");
    for i in 0..6 {
        let name = format!("{i:04}.png");
        assert_eq!(
            std::fs::read(cwd.join("whole").join(&name)).unwrap(),
            std::fs::read(sharded.join(&name)).unwrap(),
            "{name} differs from one process's"
        );
    }
    for tag in ["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"] {
        assert!(
            sharded.join(format!("manifest.{tag}.jsonl")).is_file(),
            "{tag}"
        );
        assert!(
            sharded.join(format!("samples.{tag}.json")).is_file(),
            "{tag}"
        );
    }
    let out = collect(&sharded);
    common::assert_success(&out);
    assert!(
        text_of(&out.stdout).contains("6 of 6 items"),
        "{}",
        text_of(&out.stdout)
    );

    // A shard run again (a requeued task) makes nothing twice.
    let before = std::fs::metadata(sharded.join("0001.png"))
        .unwrap()
        .modified()
        .unwrap();
    let out = sample(cwd, "sharded", &["--shard", "1/3"], &[]);
    common::assert_success(&out);
    assert!(
        text_of(&out.stderr).contains("2 of this process's 2 images found made"),
        "{}",
        text_of(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(sharded.join("0001.png"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );

    // One image cut short, one lost: collect names both and how to redo each, and fails.
    std::fs::write(sharded.join("0004.png"), b"\x89PNG\r\n\x1a\n cut short").unwrap();
    std::fs::remove_file(sharded.join("0003.png")).unwrap();
    let out = collect(&sharded);
    assert!(!out.status.success());
    let report = text_of(&out.stdout);
    assert!(report.contains("4 of 6 items"), "{report}");
    assert!(report.contains("item 3: 0003.png missing"), "{report}");
    assert!(
        report.contains("item 4: 0004.png does not decode"),
        "{report}"
    );
    let redo: Vec<&str> = report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("redo: "))
        .collect();
    assert_eq!(redo.len(), 2, "{report}");
    assert!(
        redo[0].ends_with("--shard 0/3") && redo[1].ends_with("--shard 1/3"),
        "{redo:?}"
    );
    let binary = env!("CARGO_BIN_EXE_dream3d");
    for command in redo {
        let rest = command.strip_prefix("dream3d ").expect("a dream3d command");
        let out = Command::new("sh")
            .current_dir(cwd)
            .arg("-c")
            .arg(format!("'{binary}' {rest}"))
            .output()
            .unwrap();
        common::assert_success(&out);
    }
    let out = collect(&sharded);
    common::assert_success(&out);
    for i in [3, 4] {
        let name = format!("{i:04}.png");
        assert_eq!(
            std::fs::read(cwd.join("whole").join(&name)).unwrap(),
            std::fs::read(sharded.join(&name)).unwrap(),
            "{name} redone differs"
        );
    }
}

#[test]
fn sharding_without_a_shared_folder_and_seed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::dream3d(dir.path());
    let out = cmd
        .args([
            "sample", "--prompt", PROMPT, "--steps", "2", "-n", "6", "--shard", "0/2",
        ])
        .args(["--model", common::sd_tiny_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text_of(&out.stderr).contains("needs -o DIR and --seed S"),
        "{}",
        text_of(&out.stderr)
    );
    let out = common::dream3d(dir.path())
        .args(["collect", "."])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text_of(&out.stderr).contains("no manifest"),
        "{}",
        text_of(&out.stderr)
    );
}

/// The shipped Kubernetes Job, checked by parsing it: neither kubeconform nor a schema is
/// reachable here, and `kubectl --dry-run=client` needs an API server. An Indexed Job whose
/// pods run `dream3d generate` with `--shards` equal to its completions, a GPU each, a grace
/// period for the checkpoint, and every mounted volume declared; its command line is one our
/// CLI parses (it then stops at the missing distribution, not at an argument).
#[test]
fn the_kubernetes_job_runs_one_shard_per_completion_index() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/k8s/generate-job.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let job = &docs[0];
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_i64().unwrap();
    assert!(spec["parallelism"].as_i64().unwrap() <= completions);
    let pod = &spec["template"]["spec"];
    assert!(matches!(
        pod["restartPolicy"].as_str(),
        Some("Never") | Some("OnFailure")
    ));
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 60);
    let container = &pod["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&command[..2], &["dream3d", "generate"]);
    let value = |flag: &str| {
        let at = command
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag}"));
        command[at + 1]
    };
    assert_eq!(value("--shards").parse::<i64>().unwrap(), completions);
    value("--seed").parse::<u64>().unwrap();
    value("--run-dir");
    assert!(!container["resources"]["limits"]["nvidia.com/gpu"].is_badvalue());
    let declared: Vec<&str> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for mount in container["volumeMounts"].as_vec().unwrap() {
        assert!(
            declared.contains(&mount["name"].as_str().unwrap()),
            "{mount:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out = common::dream3d(dir.path())
        .args(&command[1..])
        .env("JOB_COMPLETION_INDEX", "7")
        .output()
        .unwrap();
    let stderr = text_of(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("shard 7/50 (Kubernetes completion index)"),
        "{stderr}"
    );
    assert!(stderr.contains("latest.dist.safetensors"), "{stderr}");
}

/// The shipped Slurm script: valid shell, an array job that requeues, is warned before its
/// time limit (SIGUSR1, so that `scancel`'s SIGTERM does not requeue) and stops dream3d with
/// SIGTERM either way.
#[test]
fn the_slurm_script_is_a_requeueing_array_job() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm/generate.sbatch");
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    common::assert_success(&out);
    let script = std::fs::read_to_string(&path).unwrap();
    for needle in [
        "#SBATCH --array=",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@",
        "dream3d generate",
        "--run-dir",
        "--seed",
        "scontrol requeue",
        "kill -TERM",
    ] {
        assert!(script.contains(needle), "{needle}");
    }
}
