//! The evaluation metrics against independent implementations on fixed feature sets
//! (`tests/fixtures/eval/make_metric_fixtures.py`: pytorch-fid's formula with scipy's sqrtm,
//! torchmetrics' KID, the `prdc` package's density and coverage), to 1e-6; and their errors.

use dream3d::eval::metrics::{density_coverage, fid, kid, mean_cosine, Features};
use rand::SeedableRng;

fn fixtures() -> Vec<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval/metric_fixtures.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"].as_array().unwrap().clone()
}

fn features(rows: &serde_json::Value) -> Features {
    let rows: Vec<Vec<f64>> = serde_json::from_value(rows.clone()).unwrap();
    Features::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{what}: {got} vs the reference's {want}"
    );
}

#[test]
fn metrics_match_the_reference_implementations() {
    let cases = fixtures();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (reference, samples) = (features(&case["reference"]), features(&case["samples"]));
        assert_close(
            fid(&reference, &samples).unwrap(),
            case["fid"].as_f64().unwrap(),
            &format!("{name}: FID"),
        );
        let k = case["k"].as_u64().unwrap() as usize;
        let (density, coverage) = density_coverage(&reference, &samples, k).unwrap();
        assert_close(
            density,
            case["density"].as_f64().unwrap(),
            &format!("{name}: density"),
        );
        assert_close(
            coverage,
            case["coverage"].as_f64().unwrap(),
            &format!("{name}: coverage"),
        );
        assert_close(
            mean_cosine(&reference, &samples).unwrap(),
            case["mean_cosine"].as_f64().unwrap(),
            &format!("{name}: mean cosine"),
        );
        if let Some(want) = case["kid"].as_f64() {
            // One subset of every image: the exact statistic, whatever the draw.
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            let (mean, std) = kid(&reference, &samples, 1, reference.nrows(), &mut rng).unwrap();
            assert_close(mean, want, &format!("{name}: KID"));
            assert_eq!(std, 0.0);
        }
    }
}

#[test]
fn fid_of_a_set_with_itself_is_zero_and_kid_averages_subsets() {
    let case = &fixtures()[0];
    let reference = features(&case["reference"]);
    assert!(fid(&reference, &reference).unwrap().abs() < 1e-9);
    let samples = features(&case["samples"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mean, std) = kid(&reference, &samples, 20, 20, &mut rng).unwrap();
    let exact = kid(&reference, &samples, 1, 40, &mut rng).unwrap().0;
    // Subsets estimate the same quantity.
    assert!(
        (mean - exact).abs() < 3.0 * std + 1e-3,
        "{mean} ± {std} vs {exact}"
    );
    assert!(std > 0.0);
}

#[test]
fn bad_sets_are_explained() {
    let a = Features::from_element(5, 3, 1.0);
    let b = Features::from_element(5, 4, 1.0);
    assert!(fid(&a, &b).unwrap_err().to_string().contains("dimensions"));
    let one = Features::from_element(1, 3, 1.0);
    assert!(fid(&one, &a)
        .unwrap_err()
        .to_string()
        .contains("at least 2"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert!(kid(&a, &a, 1, 6, &mut rng)
        .unwrap_err()
        .to_string()
        .contains("subsets of 2 to 5"));
    assert!(density_coverage(&a, &a, 5)
        .unwrap_err()
        .to_string()
        .contains("lower k"));
}
