//! Builder pools against real daemons: `scripts/daemon.sh up --nodes 3`
//! starts three standalone buildkitd instances and exports STRATA_POOL;
//! `strata pool status` reports each (and a node that accepts connections
//! but never answers as down within the deadline); `--builders FILE` is the
//! same pool as TOML, and a bad one is one line naming file and line.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{repo_root, strata};

/// The pool's addresses, started once per test binary.
fn pool() -> &'static Vec<String> {
    static POOL: OnceLock<Vec<String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let stdout = up_nodes();
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export STRATA_POOL="))
            .expect("STRATA_POOL exported");
        line.split(',').map(str::to_owned).collect()
    })
}

/// A TCP port that accepts connections and never says a word.
fn silent_node() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("tcp://{addr}")
}

#[test]
fn pool_status_reports_every_node_and_a_silent_one_down_in_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let silent = silent_node();
    let mut args: Vec<String> = Vec::new();
    for addr in nodes.iter().chain([&silent]) {
        args.extend(["--addr".into(), addr.clone()]);
    }
    args.extend(["pool", "status", "--deadline", "2s", "--json"].map(String::from));
    // A build in flight on the first node, for it to count.
    let p = common::project::Project::new(&format!(
        "[images.busy]\nbase = \"{}\"\n\n[[images.busy.toolchain]]\nrun = \"sleep 12; echo {}\"\n",
        common::stack().base_image,
        common::project::rand_suffix()
    ));
    let spec = p.spec().display().to_string();
    let mut busy = common::strata_command(["--addr", &nodes[0], "build", "-f", &spec])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let began = Instant::now();
    let run = strata(&args);
    let took = began.elapsed();
    let _ = busy.wait();
    assert_eq!(run.code, Some(1), "a node is down: {}", run.stderr);
    assert!(
        run.stderr.contains("1 of 4 nodes are down"),
        "{}",
        run.stderr
    );
    assert!(
        took < Duration::from_secs(10),
        "the silent node held it up: {took:?}"
    );
    let status: Value = serde_json::from_str(&run.stdout).unwrap();
    let status = status.as_array().unwrap();
    for (node, addr) in status.iter().zip(nodes) {
        assert_eq!(node["address"], addr.as_str());
        assert_eq!(node["reachable"], true, "{node}");
        assert!(node["version"].as_str().is_some_and(|v| !v.is_empty()));
        assert!(!node["platforms"].as_array().unwrap().is_empty());
    }
    assert_eq!(status[0]["builds_in_flight"], 1, "{}", status[0]);
    assert_eq!(status[3]["reachable"], false);
    assert!(
        status[3]["error"].as_str().unwrap().contains("answer"),
        "{}",
        status[3]
    );
}

#[test]
fn a_builders_file_names_the_nodes_and_a_bad_one_its_line() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("builders.toml");
    let mut text = String::new();
    for (i, addr) in nodes.iter().enumerate() {
        text.push_str(&format!("[[node]]\nname = \"n{i}\"\naddr = \"{addr}\"\n\n"));
    }
    std::fs::write(&file, &text).unwrap();
    let path = file.display().to_string();
    let run = strata(["--builders", path.as_str(), "pool", "status"]);
    let out = run.ok();
    for i in 0..3 {
        assert!(out.contains(&format!("n{i} ")), "{out}");
    }

    std::fs::write(&file, "[[node]]\naddr = \"unix:///x\"\nwieght = 2\n").unwrap();
    let bad = strata(["--builders", path.as_str(), "pool", "status"]);
    let line = bad.clean_error();
    assert!(
        line.contains(&format!("{path}:3: unknown field `wieght`")),
        "{line}"
    );

    let one = strata(["--builders", path.as_str(), "bench", "-f", "x.toml", "x"]);
    assert!(
        one.clean_error().contains("strata pool bench"),
        "{}",
        one.stderr
    );
}

/// `du`, `info` and `prune` ask every node at once; a node that never
/// answers is one line and a non-zero exit, the others still shown.
#[test]
fn du_info_and_prune_ask_every_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let mut args: Vec<String> = vec!["--timeout".into(), "2s".into()];
    for addr in nodes {
        args.extend(["--addr".into(), addr.clone()]);
    }
    let ask = |extra: &[&str], silent: bool| {
        let mut all = args.clone();
        if silent {
            all.extend(["--addr".into(), silent_node()]);
        }
        all.extend(extra.iter().map(|s| s.to_string()));
        strata(&all)
    };
    let du = ask(&["du"], false).ok().to_owned();
    for label in [
        "buildkitd ",
        "buildkitd-node2 ",
        "buildkitd-node3 ",
        "all (3 nodes)",
    ] {
        assert!(du.contains(label), "{label}: {du}");
    }
    let info: Value = serde_json::from_str(ask(&["info", "--json"], false).ok()).unwrap();
    let info = info.as_array().unwrap();
    assert_eq!(info.len(), 3);
    for (entry, addr) in info.iter().zip(nodes) {
        assert_eq!(entry["address"], addr.as_str());
        assert!(entry["info"]["version"].as_str().is_some(), "{entry}");
    }
    let pruned = ask(&["prune", "--filter", "id==strata-no-such-record"], false)
        .ok()
        .to_owned();
    assert_eq!(pruned.matches("Freed 0 B").count(), 4, "{pruned}");
    assert!(pruned.contains("all nodes: Freed"), "{pruned}");

    let began = Instant::now();
    let with_silent = ask(&["du", "--json"], true);
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "the silent node held it up"
    );
    assert_eq!(with_silent.code, Some(1), "{}", with_silent.stderr);
    assert!(
        with_silent
            .clean_error()
            .contains("1 of 4 nodes did not answer"),
        "{}",
        with_silent.stderr
    );
    let usage: Value = serde_json::from_str(&with_silent.stdout).unwrap();
    let usage = usage.as_array().unwrap();
    assert!(
        usage[..3].iter().all(|n| n["usage"]["total"].is_u64()),
        "{usage:?}"
    );
    assert!(usage[3]["error"].is_string(), "{}", usage[3]);
}

/// A seed-003-shaped tree of 8 images: a base, two tiers built from it, and
/// five services, each with a step of its own and an overlay.
fn tree_spec(base: &str, step: &str) -> String {
    let mut spec = String::new();
    let images = [
        ("pybase", None),
        ("ml", Some("pybase")),
        ("tools", Some("pybase")),
        ("svc-a", Some("ml")),
        ("svc-b", Some("ml")),
        ("svc-c", Some("ml")),
        ("svc-d", Some("tools")),
        ("svc-e", Some("tools")),
    ];
    for (name, from) in images {
        let base_line = match from {
            Some(parent) => format!("from = \"{parent}\""),
            None => format!("base = \"{base}\""),
        };
        spec.push_str(&format!(
            "[images.{name}]\n{base_line}\n\n[[images.{name}.toolchain]]\nrun = \"{}\"\n\n\
             [images.{name}.overlay]\ncopy = {{ from = \"overlay/{name}/\", to = \"/srv/{name}\" }}\n\n",
            step.replace("NAME", name)
        ));
    }
    spec
}

/// A project of [`tree_spec`] with `step` (NAME: the image's name) and overlays.
fn tree_project(step: &str) -> common::project::Project {
    let p = common::project::Project::new(&tree_spec(&common::stack().base_image, step));
    for name in [
        "pybase", "ml", "tools", "svc-a", "svc-b", "svc-c", "svc-d", "svc-e",
    ] {
        let dir = p.path(&format!("overlay/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.txt"), name).unwrap();
    }
    p
}

#[test]
fn a_tree_of_images_spreads_over_the_pool_and_returns_to_the_same_nodes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let p = tree_project("echo NAME > /NAME.txt");
    for name in [
        "pybase", "ml", "tools", "svc-a", "svc-b", "svc-c", "svc-d", "svc-e",
    ] {
        let dir = p.path(&format!("overlay/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.txt"), name).unwrap();
    }
    let pool_args = pool_args();
    let build = || {
        let meta = p.path(&format!("meta-{}.json", common::project::rand_suffix()));
        let mut args = pool_args.clone();
        args.extend(["build", "-f"].map(String::from));
        args.push(p.spec().display().to_string());
        args.extend(["--progress", "json", "--metadata-file"].map(String::from));
        args.push(meta.display().to_string());
        let run = strata(&args);
        run.ok();
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap();
        (run, meta)
    };
    let node_of = |meta: &Value| -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = meta
            .as_object()
            .unwrap()
            .iter()
            .map(|(image, m)| (image.clone(), m["strata.node"].as_str().unwrap().to_owned()))
            .collect();
        all.sort();
        all
    };

    let (run, first) = build();
    let placed = node_of(&first);
    assert_eq!(placed.len(), 8);
    // --progress json ends with the closing table: per image and per tier.
    let last = run.stderr.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(last).expect(last);
    let summary = &summary["summary"];
    let images = summary["images"].as_array().unwrap();
    let mut from_summary: Vec<(String, String)> = images
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap().into(),
                i["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    from_summary.sort();
    assert_eq!(from_summary, placed, "{summary}");
    let tiers = summary["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 3, "{summary}");
    let in_tiers: u64 = tiers
        .iter()
        .map(|t| t["images"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(in_tiers, 8);
    for t in tiers {
        assert!(t["hit_rate"].is_f64() && t["seconds"].is_f64(), "{t}");
    }
    let bound = (1.25f64 * 8.0 / 3.0).ceil() as usize;
    for node in nodes {
        let load = placed.iter().filter(|(_, n)| n == node).count();
        assert!(
            load <= bound,
            "{node} took {load} of 8 images (bound {bound}): {placed:?}"
        );
    }
    assert!(
        placed
            .iter()
            .map(|(_, n)| n)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 2,
        "spread over the pool: {placed:?}"
    );

    // Again: the same nodes, every step cached.
    let (_, second) = build();
    assert_eq!(node_of(&second), placed, "the same placement");
    for (image, m) in second.as_object().unwrap() {
        assert_eq!(
            m["strata.cached"], m["strata.steps"],
            "{image} rebuilt: {m}"
        );
    }

    // One leaf's overlay edited: only it runs, on the same node.
    let edit = format!("edited {}", common::project::rand_suffix());
    std::fs::write(p.path("overlay/svc-c/hello.txt"), edit).unwrap();
    let (_, third) = build();
    assert_eq!(node_of(&third), placed);
    for (image, m) in third.as_object().unwrap() {
        let ran = m["strata.steps"].as_u64().unwrap() - m["strata.cached"].as_u64().unwrap();
        let expected = if image == "svc-c" { 1 } else { 0 };
        assert_eq!(ran, expected, "{image}: {m}");
    }
}

#[test]
fn a_node_killed_mid_build_moves_its_images_to_the_others() {
    lose_node_mid_build("-KILL", "-KILL", "");
}

/// A frozen node (SIGSTOP: connections open, nothing answers) is noticed
/// when its build's progress goes silent and a probe gets no answer either
/// (30 s, then --timeout), not waited for.
#[test]
fn a_node_that_stops_answering_mid_build_moves_its_images_to_the_others() {
    lose_node_mid_build("-STOP", "-CONT", "no progress for 30s");
}

/// Sends node 3 `signal` while six 8 s steps run over the pool (`after`
/// once the build ended), and checks the build completed on the other two,
/// the line saying what moved giving `why`.
fn lose_node_mid_build(signal: &str, after: &str, why: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let base = &common::stack().base_image;
    let mut spec = String::new();
    let names = ["job-a", "job-b", "job-c", "job-d", "job-e", "job-f"];
    for name in names {
        spec.push_str(&format!(
            "[images.{name}]\nbase = \"{base}\"\n\n[[images.{name}.toolchain]]\n\
             run = \"sleep 8; echo {name} {} > /{name}.txt\"\n\n",
            common::project::rand_suffix()
        ));
    }
    let p = common::project::Project::new(&spec);
    let meta = p.path("meta.json");
    let cache = format!(
        "type=registry,ref={}/strata/pool-{}:pool",
        common::stack().registry,
        common::project::rand_suffix()
    );
    let mut args = pool_args();
    args.extend([
        "--pool-cache".into(),
        cache,
        "--timeout".into(),
        "5s".into(),
    ]);
    args.extend(["build", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--progress", "plain", "--metadata-file"].map(String::from));
    args.push(meta.display().to_string());
    let began = Instant::now();
    let child = common::strata_command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-build: every image is in its 8 s step.
    std::thread::sleep(Duration::from_secs(4));
    assert!(signal_node3(signal).success());
    let out = child.wait_with_output().unwrap();
    let took = began.elapsed();
    signal_node3(after);
    restart_nodes();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the build completes on the others:\n{stderr}"
    );
    let lost = &nodes[2];
    let line = stderr
        .lines()
        .find(|l| l.contains("was lost during the build"))
        .unwrap_or_else(|| panic!("one line says what moved:\n{stderr}"));
    assert!(line.contains(lost.as_str()) && line.contains(why), "{line}");
    assert!(
        stderr.contains("pool: 6 images on"),
        "total time reported:\n{stderr}"
    );
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap();
    for name in names {
        let node = meta[name]["strata.node"].as_str().unwrap();
        assert_ne!(node, lost.as_str(), "{name} ended on the lost node");
    }
    assert!(took < Duration::from_secs(150), "{took:?}");
}

/// Images `from` a Dockerfile image built (and pushed) in an earlier tier
/// are solved on it as pushed, by digest, on whichever node they are
/// placed: its steps run once (not again, to a digest of its own, on each
/// child's node) and it is listed once.
#[test]
fn a_dockerfile_parent_is_built_once_for_children_on_several_nodes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stack = common::stack();
    let salt = common::project::rand_suffix();
    let children = ["kid-a", "kid-b", "kid-c", "kid-d"];
    let mut spec = format!(
        "[images.df]\ndockerfile = {{ file = \"df/Dockerfile\", context = \"df\" }}\n\
         push = \"{}/strata/pool-df-{salt}:latest\"\n\n",
        stack.registry
    );
    for kid in children {
        spec.push_str(&format!(
            "[images.{kid}]\nfrom = \"df\"\n\n[[images.{kid}.toolchain]]\nrun = \"echo {kid} > /kid\"\n\n"
        ));
    }
    let p = common::project::Project::new(&spec);
    std::fs::create_dir_all(p.path("df")).unwrap();
    let dockerfile = format!("FROM {}\nRUN echo {salt} > /df\n", stack.base_image);
    std::fs::write(p.path("df/Dockerfile"), dockerfile).unwrap();
    let mut args = pool_args();
    args.extend(["build", "--no-key-tag", "--progress", "plain", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    let run = strata(&args);
    run.ok();
    let builds = run
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("RUN echo {salt}")) && !l.contains("DONE"))
        .map(|l| l.split(']').next().unwrap_or_default())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        builds.len(),
        1,
        "built on one node: {builds:?}\n{}",
        run.stderr
    );
    let bases = run
        .stderr
        .lines()
        .filter_map(|l| l.split(&format!("pool-df-{salt}:latest@")).nth(1))
        .filter(|rest| rest.starts_with("sha256:"))
        .map(|rest| &rest[..71])
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(bases.len(), 1, "one digest for every child: {bases:?}");
    let rows = run.stderr.lines().filter(|l| l.starts_with("df ")).count();
    assert_eq!(rows, 1, "df listed once:\n{}", run.stderr);
    let kid_nodes = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("kid-"))
        .filter_map(|l| l.split("  on ").nth(1))
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        kid_nodes.len() >= 2,
        "children on several nodes:\n{}",
        run.stdout
    );
}

/// The pool cache keeps a moved image warm: after a build over three nodes
/// with `--pool-cache`, the same build without the busiest node places its
/// images on the other two, which never built them, and every step of them
/// comes from the pool cache.
#[test]
fn images_moved_to_another_node_import_the_pool_cache() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let salt = common::project::rand_suffix();
    let names = ["warm-a", "warm-b", "warm-c", "warm-d", "warm-e", "warm-f"];
    let mut spec = String::new();
    for name in names {
        spec.push_str(&format!(
            "[images.{name}]\nbase = \"{}\"\n\n[[images.{name}.toolchain]]\n\
             run = \"echo {name} {salt} > /{name}.txt\"\n\n",
            common::stack().base_image
        ));
    }
    let p = common::project::Project::new(&spec);
    let cache = format!(
        "type=registry,ref={}/strata/pool-warm-{salt}:pool",
        common::stack().registry
    );
    let build = |on: &[String]| -> Value {
        let meta = p.path(&format!("meta-{}.json", common::project::rand_suffix()));
        let mut args: Vec<String> = on
            .iter()
            .flat_map(|a| ["--addr".into(), a.clone()])
            .collect();
        args.extend([
            "--pool-cache".into(),
            cache.clone(),
            "build".into(),
            "-f".into(),
        ]);
        args.push(p.spec().display().to_string());
        // One solve at a time: Debian's docker-registry can fail a cache
        // manifest whose blobs another node pushes into the same repository
        // at that moment ("manifest blob unknown", seen once in CI); this
        // test is about what is imported, not about that race.
        args.extend(
            [
                "--max-parallel",
                "1",
                "--progress",
                "quiet",
                "--metadata-file",
            ]
            .map(String::from),
        );
        args.push(meta.display().to_string());
        strata(&args).ok();
        serde_json::from_str(&std::fs::read_to_string(meta).unwrap()).unwrap()
    };
    let first = build(nodes);
    let node_of = |meta: &Value, name: &str| meta[name]["strata.node"].as_str().unwrap().to_owned();
    let busiest = nodes
        .iter()
        .max_by_key(|n| names.iter().filter(|i| node_of(&first, i) == **n).count())
        .unwrap();
    let rest: Vec<String> = nodes.iter().filter(|n| *n != busiest).cloned().collect();
    let second = build(&rest);
    let moved: Vec<&str> = names
        .into_iter()
        .filter(|i| node_of(&first, i) == *busiest)
        .collect();
    assert!(!moved.is_empty());
    for image in moved {
        let m = &second[image];
        assert_ne!(node_of(&second, image), *busiest);
        assert_eq!(
            m["strata.cached"], m["strata.steps"],
            "{image} ran cold: {m}"
        );
    }
}

/// `strata pool bench` compares placements on the same nodes (two of the
/// pool's, emptied first: the first node is the other tests' daemon): with
/// strata's, each rebuild after an overlay edit runs that one step, and a
/// context-path hash puts the whole spec on one node.
#[test]
fn pool_bench_compares_placements_over_edits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let salt = common::project::rand_suffix();
    let mut spec = String::new();
    for (name, from) in [
        ("pb-base", None),
        ("pb-1", Some("pb-base")),
        ("pb-2", Some("pb-base")),
        ("pb-3", Some("pb-base")),
    ] {
        let base_line = match from {
            Some(parent) => format!("from = \"{parent}\""),
            None => format!("base = \"{}\"", common::stack().base_image),
        };
        spec.push_str(&format!(
            "[images.{name}]\n{base_line}\n\n[[images.{name}.toolchain]]\nrun = \"echo {name} {salt} > /{name}.txt\"\n\n\
             [images.{name}.overlay]\ncopy = {{ from = \"overlay/{name}/\", to = \"/srv/{name}\" }}\n\n"
        ));
    }
    let p = common::project::Project::new(&spec);
    for name in ["pb-base", "pb-1", "pb-2", "pb-3"] {
        std::fs::create_dir_all(p.path(&format!("overlay/{name}"))).unwrap();
        std::fs::write(p.path(&format!("overlay/{name}/f.txt")), name).unwrap();
    }
    let json = p.path("bench.json");
    let mut args: Vec<String> = nodes[1..]
        .iter()
        .flat_map(|a| ["--addr".into(), a.clone()])
        .collect();
    args.extend(["pool", "bench", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--rounds", "2"].map(String::from));
    let refused = strata(&args);
    assert!(
        refused.clean_error().contains("--allow-prune"),
        "{}",
        refused.stderr
    );
    args.extend([
        "--allow-prune".into(),
        "--json".into(),
        json.display().to_string(),
    ]);
    let out = strata(&args).ok().to_owned();
    for placement in ["rendezvous", "context-path", "random"] {
        assert!(out.lines().any(|l| l.starts_with(placement)), "{out}");
    }
    let results: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let [ours, sticky, _random] = results.as_array().unwrap().as_slice() else {
        panic!("three placements: {results}");
    };
    let (steps, cached) = (
        ours["steps"].as_u64().unwrap(),
        ours["cached"].as_u64().unwrap(),
    );
    assert_eq!(
        steps - cached,
        2,
        "one overlay step per rebuild ran: {ours}"
    );
    assert_eq!(
        sticky["busiest"], 4,
        "one node for the whole spec: {sticky}"
    );
    assert!(ours["busiest"].as_u64().unwrap() <= 3, "{ours}");
}

/// `compose build` takes a pool as `build` does: services placed over the
/// nodes, each named in the summary, found by key tag the second time.
#[test]
fn compose_services_are_placed_over_the_pool() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stack = common::stack();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dockerfile = format!("FROM {}\nCOPY . /app/\n", stack.base_image);
    std::fs::write(root.join("Dockerfile"), dockerfile).unwrap();
    let repo = format!(
        "{}/strata/pool-compose-{}",
        stack.registry,
        common::project::rand_suffix()
    );
    let mut yaml = String::from("services:\n");
    let services = ["web", "api", "worker", "cron"];
    for name in services {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("f.txt"), name).unwrap();
        yaml.push_str(&format!(
            "  {name}:\n    build:\n      context: ./{name}\n      dockerfile: ../Dockerfile\n    image: {repo}-{name}:latest\n"
        ));
    }
    std::fs::write(root.join("compose.yaml"), yaml).unwrap();
    let file = root.join("compose.yaml").display().to_string();
    let mut args = pool_args();
    args.extend(
        [
            "compose",
            "build",
            "-f",
            &file,
            "--push",
            "--progress",
            "plain",
        ]
        .map(String::from),
    );
    let first = strata(&args);
    let out = first.ok();
    let nodes: std::collections::BTreeSet<&str> = services
        .iter()
        .filter_map(|s| out.lines().find(|l| l.starts_with(&format!("{s}  "))))
        .filter_map(|l| l.split("  on ").nth(1))
        .collect();
    assert!(nodes.len() >= 2, "services over the pool:\n{out}");
    assert!(
        first.stderr.contains("pool: 4 images on"),
        "{}",
        first.stderr
    );
    let again = strata(&args);
    for s in services {
        assert!(
            again.ok().contains(&format!("{s}: up to date")),
            "{}",
            again.stdout
        );
    }
}

/// `kill -SIGNAL` to node 3 (its pid from daemon.sh's pidfile).
fn signal_node3(signal: &str) -> std::process::ExitStatus {
    let state = std::env::var("STRATA_STATE_DIR").unwrap_or_else(|_| "/var/lib/strata-dev".into());
    let pid = std::fs::read_to_string(format!("{state}/run/buildkitd-node3.pid")).unwrap();
    Command::new("kill")
        .args([signal, pid.trim()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

/// Every call has a deadline: a node that freezes after the connection was
/// made (SIGSTOP) fails a call within --timeout, naming the call, instead of
/// leaving it waiting for the keepalive.
#[test]
fn a_call_to_a_node_frozen_after_connecting_ends_at_its_deadline() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let addr: strata::Addr = pool()[2].parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (err, took) = runtime.block_on(async {
        let tls = strata::TlsOptions::default();
        let client = strata::Client::connect_within(addr, &tls, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(signal_node3("-STOP").success());
        let began = Instant::now();
        let err = client.info().await.unwrap_err();
        (err, began.elapsed())
    });
    signal_node3("-CONT");
    assert!(
        matches!(
            err,
            strata::client::ClientError::NoAnswer { call: "Info", .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no answer within 2s"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Brings every node back (after one was killed).
fn restart_nodes() {
    up_nodes();
}

/// `daemon.sh up --nodes 3`: its export lines.
fn up_nodes() -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/daemon.sh"))
        .args(["up", "--nodes", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "daemon.sh up --nodes 3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--addr NODE` for every node of the pool.
fn pool_args() -> Vec<String> {
    pool()
        .iter()
        .flat_map(|addr| ["--addr".to_owned(), addr.clone()])
        .collect()
}

#[test]
fn a_disk_budget_prunes_every_node_down_to_it_after_each_tier() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = pool();
    let salt = common::project::rand_suffix();
    let p = tree_project(&format!("head -c 20000000 /dev/urandom > /NAME-{salt}.bin"));
    let mut args = pool_args();
    args.extend(["build", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--progress", "plain", "--keep-storage", "30MB"].map(String::from));
    let run = strata(&args);
    run.ok();
    for tier in 1..=3 {
        assert!(
            run.stderr.contains(&format!("tier {tier}: ")),
            "{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("--keep-storage: "), "{}", run.stderr);
    assert!(run.stderr.contains(" freed "), "{}", run.stderr);
    for addr in nodes {
        let du = strata(["--addr", addr.as_str(), "du", "--json"]);
        let du: Value = serde_json::from_str(du.ok()).unwrap();
        let total = du["total"].as_u64().unwrap();
        assert!(
            total <= 30_000_000,
            "{addr} holds {total} B after the last tier"
        );
    }
}

#[test]
fn max_parallel_one_serializes_the_whole_pool() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = &common::stack().base_image;
    let salt = common::project::rand_suffix();
    let mut spec = String::new();
    for name in ["one", "two", "three", "four"] {
        spec.push_str(&format!(
            "[images.{name}]\nbase = \"{base}\"\n\n[[images.{name}.toolchain]]\n\
             run = \"sleep 3; echo {name} {salt} > /{name}.txt\"\n\n"
        ));
    }
    let p = common::project::Project::new(&spec);
    let mut args = pool_args();
    args.extend(["build", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--progress", "plain", "--max-parallel", "1"].map(String::from));
    let began = Instant::now();
    strata(&args).ok();
    let took = began.elapsed();
    // Four 3 s steps one after another, whatever node each is on.
    assert!(took >= Duration::from_secs(12), "not serialized: {took:?}");
}

#[test]
fn one_view_shows_a_shared_step_once_per_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let salt = common::project::rand_suffix();
    let p = tree_project(&format!("echo NAME {salt} > /NAME.txt"));
    let mut args = pool_args();
    args.extend(["build", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--progress", "plain"].map(String::from));
    let run = strata(&args);
    run.ok();
    // Every image's graph holds pybase's step; each node shows it once.
    let step = format!("run: echo pybase {salt} > /pybase.txt");
    let shown: Vec<&str> = run.stderr.lines().filter(|l| l.ends_with(&step)).collect();
    assert!(
        !shown.is_empty() && shown.len() <= 3,
        "shown {} times:\n{}",
        shown.len(),
        shown.join("\n")
    );
    assert!(
        shown.iter().all(|l| l.starts_with("[buildkitd")),
        "lines carry their node: {shown:?}"
    );
}

/// `daemon.sh arm64-node up`: the node whose worker declares linux/arm64
/// alone (a stand-in for a native arm64 builder); its address.
fn arm64_node() -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/daemon.sh"))
        .args(["arm64-node", "up"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "daemon.sh arm64-node up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export STRATA_ARM64_NODE="))
        .expect("STRATA_ARM64_NODE exported")
        .trim_matches('\'')
        .to_owned()
}

/// A two-platform spec image whose step writes `uname -m` (after `sleep`
/// seconds), pushing to a new repository: the project and its push target.
fn machine_project(sleep: u32) -> (common::project::Project, String) {
    let s = common::stack();
    let target = format!(
        "{}/strata/pool-machine-{}:v1",
        s.registry,
        common::project::rand_suffix()
    );
    let spec = format!(
        r#"
[images.machine]
base = "{base}"
platform = ["linux/amd64", "linux/arm64"]
push = "{target}"

[[images.machine.toolchain]]
run = "sleep {sleep}; uname -m > /uname.txt"
"#,
        base = s.base_image
    );
    (common::project::Project::new(&spec), target)
}

/// `strata --addr A --addr B … build` of `p` with a metadata file: the run
/// and the metadata.
fn pool_build(nodes: &[&str], p: &common::project::Project) -> (common::Run, Value) {
    let meta = p.path(&format!("meta-{}.json", common::project::rand_suffix()));
    let mut args: Vec<String> = nodes
        .iter()
        .flat_map(|n| ["--addr".to_owned(), n.to_string()])
        .collect();
    args.extend(["build", "--progress", "plain", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--metadata-file".to_owned(), meta.display().to_string()]);
    let run = strata(&args);
    let meta = std::fs::read_to_string(&meta)
        .ok()
        .and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or(Value::Null);
    (run, meta)
}

/// Each machine the index at `target` holds, per platform, from `uname.txt`.
fn machines(target: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|p| {
            let text = rt.block_on(common::project::layer_file(target, p, "uname.txt"));
            text.unwrap_or_default().trim().to_owned()
        })
        .collect()
}

/// Image `machine` was built on every one of `nodes` (its metadata names
/// them), each of which ran a step whose progress line holds `step`.
fn ran_on_each(run: &common::Run, meta: &Value, nodes: &[&str], step: &str) {
    let named = meta["machine"]["strata.node"].as_str().unwrap_or_default();
    for addr in nodes {
        assert!(named.contains(addr), "{meta}");
        let label = strata::pool::label(addr);
        assert!(
            run.stderr
                .lines()
                .any(|l| l.starts_with(&format!("[{label}")) && l.contains(step)),
            "{label} ran its platform's {step:?}:\n{}",
            run.stderr
        );
    }
}

/// Over a pool with a node whose worker declares linux/arm64, a
/// two-platform image builds each platform where it runs natively (arm64
/// there, amd64 on the other), pushed by key tag and put together as one
/// index; unchanged, it is up to date without a solve.
#[test]
fn each_platform_builds_on_its_native_node_into_one_index() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let amd64 = pool()[1].clone();
    let arm64 = arm64_node();
    let (p, target) = machine_project(0);
    let (run, meta) = pool_build(&[&amd64, &arm64], &p);
    run.ok();
    // The step ran once on each node: arm64 on the arm64 node.
    ran_on_each(&run, &meta, &[&amd64, &arm64], "uname -m");
    assert_eq!(machines(&target), ["x86_64", "aarch64"]);

    let (again, _) = pool_build(&[&amd64, &arm64], &p);
    assert!(
        again.ok().contains("machine: up to date ("),
        "{}",
        again.stdout
    );
}

/// A two-platform Dockerfile image over the same pool: the frontend is asked
/// for each platform on its native node, and the parts are put together as
/// one index whose platforms record the whole image's key, as one solve
/// labels them: the same image built on one daemon is then up to date.
#[test]
fn a_dockerfile_image_builds_each_platform_on_its_native_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = common::stack();
    let amd64 = pool()[1].clone();
    let arm64 = arm64_node();
    let salt = common::project::rand_suffix();
    let target = format!("{}/strata/pool-df-machine-{salt}:v1", s.registry);
    let p = common::project::Project::new(&format!(
        "[images.machine]\ndockerfile = {{ file = \"df/Dockerfile\", context = \"df\" }}\n\
         platform = [\"linux/amd64\", \"linux/arm64\"]\npush = \"{target}\"\n"
    ));
    let dockerfile = format!(
        "FROM {}\nRUN echo {salt} && uname -m > /uname.txt\n",
        s.base_image
    );
    // A context of its own: the metadata files land in the project dir.
    std::fs::create_dir(p.path("df")).unwrap();
    std::fs::write(p.path("df/Dockerfile"), dockerfile).unwrap();
    let (run, meta) = pool_build(&[&amd64, &arm64], &p);
    run.ok();
    ran_on_each(&run, &meta, &[&amd64, &arm64], &format!("RUN echo {salt}"));
    assert_eq!(machines(&target), ["x86_64", "aarch64"]);
    assert!(
        run.stdout.contains("2 steps: 2 run"),
        "each platform's RUN counted:\n{}",
        run.stdout
    );

    let (again, _) = pool_build(&[&amd64, &arm64], &p);
    assert!(
        again.ok().contains("machine: up to date ("),
        "{}",
        again.stdout
    );
    // One daemon takes the pool's index for the same inputs.
    let (one, _) = pool_build(&[&amd64], &p);
    assert!(one.ok().contains("machine: up to date ("), "{}", one.stdout);
}

/// A platform no node of the pool builds is one line naming the image, the
/// platform and every node with its platforms, before anything is solved
/// or pushed.
#[test]
fn a_platform_no_node_builds_is_one_clear_line() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let amd64 = pool()[1].clone();
    let arm64 = arm64_node();
    let (p, target) = machine_project(0);
    let spec = std::fs::read_to_string(p.spec())
        .unwrap()
        .replace("\"linux/arm64\"]", "\"windows/amd64\"]");
    std::fs::write(p.spec(), spec).unwrap();
    let (run, _) = pool_build(&[&amd64, &arm64], &p);
    let line = run.clean_error().to_owned();
    assert!(
        line.contains("image machine: no node of the pool builds windows/amd64")
            && line.contains("linux/arm64")
            && line.contains(&strata::pool::label(&arm64)),
        "{line}"
    );
    let repo = target.rsplit_once(':').unwrap().0;
    assert!(
        common::project::registry_tags(repo).is_empty(),
        "nothing pushed"
    );
}

/// The arm64 node killed while it builds its platform: the platform moves
/// to the node left (one line says so) and the index of both is written.
#[test]
fn an_arm64_node_lost_mid_build_moves_its_platform_and_the_index_is_written() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let amd64 = pool()[1].clone();
    let arm64 = arm64_node();
    let (p, target) = machine_project(6);
    let meta = p.path("meta.json");
    let args = [
        "--addr",
        &amd64,
        "--addr",
        &arm64,
        "--timeout",
        "5s",
        "build",
        "--progress",
        "plain",
        "-f",
    ];
    let mut cmd = common::strata_command(args);
    cmd.arg(p.spec()).arg("--metadata-file").arg(&meta);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let state = std::env::var("STRATA_STATE_DIR").unwrap_or_else(|_| "/var/lib/strata-dev".into());
    let pid = std::fs::read_to_string(format!("{state}/run/buildkitd-node9.pid")).unwrap();
    Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    arm64_node();
    assert!(
        out.status.success(),
        "completes on the node left:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("was lost during the build"))
        .unwrap_or_else(|| panic!("one line says what moved:\n{stderr}"));
    assert!(line.contains("machine (linux/arm64)"), "{line}");
    assert_eq!(machines(&target), ["x86_64", "aarch64"]);
}

/// With provenance and an SBOM over the same pool, each node attaches its
/// platform's attestations and the one index strata writes holds both
/// platforms, each with its own attestation manifest (none shown as a
/// platform).
#[test]
fn attestations_built_on_each_node_land_in_one_index() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = common::stack();
    // A daemon of the test's own for the amd64 part: this BuildKit keeps an
    // SBOM-scanned image's records in use until it restarts (moby/buildkit#5498),
    // which would hold the pool nodes above the disk budget another test prunes to.
    let scratch = common::ScratchDaemon::start();
    let amd64 = scratch.addr.clone();
    let arm64 = arm64_node();
    let generator = s
        .var("STRATA_SBOM_GENERATOR")
        .expect("STRATA_SBOM_GENERATOR");
    let salt = common::project::rand_suffix();
    let target = format!("{}/strata/pool-attest-{salt}:v1", s.registry);
    let p = common::project::Project::new(&format!(
        "[images.machine]\nbase = \"{}\"\nplatform = [\"linux/amd64\", \"linux/arm64\"]\n\
         push = \"{target}\"\nprovenance = \"min\"\nsbom = {{ generator = \"{generator}\" }}\n\n\
         [[images.machine.toolchain]]\nrun = \"echo {salt} > /salt.txt\"\n",
        s.base_image
    ));
    let (run, meta) = pool_build(&[&amd64, &arm64], &p);
    run.ok();
    ran_on_each(&run, &meta, &[&amd64, &arm64], &format!("echo {salt}"));
    let listed = strata(["images", "attestations", "--json", &target]);
    let all: Value = serde_json::from_str(listed.ok()).unwrap();
    let platforms = all[&target].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = platforms
        .iter()
        .filter_map(|p| p["platform"].as_str())
        .collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"], "{all}");
    for p in &platforms {
        let kinds: Vec<&str> = p["statements"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s["predicate"]
                    .as_object()?
                    .keys()
                    .next()
                    .map(String::as_str)
            })
            .collect();
        assert!(
            kinds.contains(&"sbom") && kinds.contains(&"provenance"),
            "{}: {p}",
            p["platform"]
        );
    }
    // The arm64 image's SBOM is of the arm64 root filesystem.
    let arm64_sbom = platforms[1]["statements"].to_string();
    assert!(arm64_sbom.contains("arch=arm64"), "{arm64_sbom}");
}
