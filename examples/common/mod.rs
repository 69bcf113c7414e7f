//! What the benchmark examples share: timing statistics and peak memory (each example uses
//! a subset).
#![allow(dead_code)]

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?
        .parse()?;
    Ok(kb * 1024)
}

/// `{"median_s", "times_s", "peak_rss_bytes"}`, the format of `benches/torch_*.py`.
pub fn summary(times: &[f64]) -> anyhow::Result<serde_json::Value> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "median_s": sorted[sorted.len() / 2],
        "times_s": times,
        "peak_rss_bytes": peak_rss_bytes()?,
    }))
}

/// The value after `flag` on the command line.
pub fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
