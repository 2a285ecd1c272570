//! Benchmark: the fleet views of `status.py` with 10,000 machines and a
//! 100,000-line journal (issue 12: at most 200 ms a page).
//!
//! Builds a scratch site: the real servers' profiles and a compute
//! profile, `EDEPLOY_BENCH_MACHINES` (default 10,000) `.hw` files made from
//! the real HP DL360p Gen8 description (about 9 kB each, distinct serials
//! and MACs), a journal of `EDEPLOY_BENCH_JOURNAL_LINES` (default 100,000)
//! lines about them (installations, machines that matched nothing with
//! their failing specs, failure reports, refusals, logs, health results)
//! and three health sessions of 100 machines. Then measures each view
//! `EDEPLOY_BENCH_RUNS` times (default 10):
//!
//! - in process (the library calls `status.py` makes, HTML or JSON
//!   rendering included): the machines list with its index missing (the
//!   first views after an upgrade build it, each within its time, until
//!   every machine is shown), then with its index, filtered
//!   (standing, search by MAC), as JSON, after 20 machines posted again
//!   (20 new `.hw` files and journal lines: the index is brought up to
//!   date); a machine's page (its hardware, its history from the journal,
//!   `explain` against every profile); the health view;
//! - as the CGI, the release `status` binary run as Apache runs it: wall
//!   time (it runs as a `SCHED_IDLE` task, so on a busy machine the wall
//!   time is mostly waiting for the CPU) and CPU time.
//!
//! `EDEPLOY_BENCH_KEEP=1` keeps the site for a closer look (its path is
//! printed last).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ms, Summary};
use edeploy::config::Config;
use edeploy::journal::{self, Decision, Record, Tried};
use edeploy::status::{fleet, pages};

const REAL_HW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-hw");
const TARGET: Duration = Duration::from_millis(200);

fn sysname(i: usize) -> String {
    format!(
        "ProLiantDL360pGen8654081B21-CZ{i:08}-d8-9d-{:02x}-{:02x}-{:02x}-fc",
        i >> 16 & 0xff,
        i >> 8 & 0xff,
        i & 0xff
    )
}

fn mac(i: usize) -> String {
    format!(
        "d8:9d:{:02x}:{:02x}:{:02x}:fc",
        i >> 16 & 0xff,
        i >> 8 & 0xff,
        i & 0xff
    )
}

/// The site: `root/edeploy.conf`, `root/{config,hw,logs,health}`.
fn build_site(root: &Path, machines: usize, lines: usize) -> Config {
    for d in ["config", "hw", "logs", "health", "lock"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for entry in fs::read_dir(Path::new(REAL_HW).join("config")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), root.join("config").join(entry.file_name())).unwrap();
    }
    fs::write(
        root.join("config/state"),
        "[('hp', 2), ('dell', '*'), ('compute', 5000)]\n",
    )
    .unwrap();
    fs::write(
        root.join("config/compute.specs"),
        "[('system', 'product', 'vendor', 'HP'),\n ('memory', 'total', 'size', 'ge(68719476736)'),\n \
         ('network', '$eth', 'serial', '$mac')]\n",
    )
    .unwrap();
    fs::write(root.join("config/compute.configure"), "pass\n").unwrap();
    let conf = root.join("edeploy.conf");
    let r = root.display();
    fs::write(
        &conf,
        format!(
            "[SERVER]\nCONFIGDIR = {r}/config\nHWDIR = {r}/hw\nLOGDIR = {r}/logs\n\
             HEALTHDIR = {r}/health\nLOCKFILE = {r}/lock/edeploy.lock\n"
        ),
    )
    .unwrap();

    let template =
        fs::read_to_string(Path::new(REAL_HW).join("hw/hp-proliant-dl360p-gen8.hw")).unwrap();
    for i in 0..machines {
        let text = template
            .replace("CZ3323FDVK", &format!("CZ{i:08}"))
            .replace("d8:9d:67:1a:d0", &mac(i)[..14]);
        fs::write(root.join("hw").join(format!("{}.hw", sysname(i))), text).unwrap();
    }

    let mut journal = fs::File::create(root.join("logs/edeploy-journal.jsonl")).unwrap();
    let mut text = Vec::with_capacity(lines * 300);
    for n in 0..lines {
        let i = n * 7919 % machines.max(1);
        let decision = match n % 10 {
            0..=4 => Decision::Configured {
                profile: "compute".into(),
                cmdb_entry: Some(i),
                hostname: Some(format!("compute{i:05}")),
                ip: Some(format!(
                    "10.{}.{}.{}",
                    i >> 16 & 0xff,
                    i >> 8 & 0xff,
                    i & 0xff
                )),
            },
            5 | 6 => Decision::NoMatch {
                profiles: ["hp", "dell", "compute"]
                    .iter()
                    .map(|p| Tried {
                        profile: (*p).into(),
                        spec: Some(2),
                        spec_text: Some("('memory', 'total', 'size', 'ge(68719476736)')".into()),
                        note: None,
                    })
                    .collect(),
                more: 0,
            },
            7 => Decision::FailureReport {
                profile: "compute".into(),
                quota_given_back: true,
            },
            8 => Decision::LogStored {
                file: format!("{}.log.gz", sysname(i)),
            },
            _ => Decision::Refused {
                status: 200,
                reason: "No more entry in the CMDB, aborting.".into(),
            },
        };
        let record = Record::new(
            "upload.py",
            "10.0.0.1",
            Some("SERVER"),
            Some(&sysname(i)),
            decision,
        );
        text.extend_from_slice(&record.to_line());
    }
    journal.write_all(&text).unwrap();
    for (s, session) in ["burnin", "rack12", "rma"].iter().enumerate() {
        let run = root
            .join("health")
            .join(session)
            .join(format!("2026_12_0{}-10h00", s + 1));
        fs::create_dir_all(&run).unwrap();
        for i in 0..100 {
            fs::write(run.join(format!("{}.hw", sysname(i))), "[]\n").unwrap();
        }
    }
    Config::load(&conf, "SERVER", root).unwrap()
}

fn time(runs: usize, mut f: impl FnMut()) -> Summary {
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    Summary::of(&samples)
}

fn report(what: &str, s: &Summary) {
    let verdict = if s.max <= TARGET { "ok" } else { "OVER 200 ms" };
    println!(
        "{what:<52} median {:>7.1} ms  max {:>7.1} ms  ({} runs) {verdict}",
        ms(s.median),
        ms(s.max),
        s.count
    );
}

/// CPU time of the reaped children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes the struct we pass and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs the `status` CGI on `query`: wall and CPU time.
fn cgi(binary: &Path, conf: &Path, query: &str) -> (Duration, Duration, usize) {
    let cpu = children_cpu();
    let start = Instant::now();
    let out = Command::new(binary)
        .env_clear()
        .env("EDEPLOY_CONF", conf)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", query)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let wall = start.elapsed();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.starts_with("Status:"),
        "{query}: {}",
        &text[..text.len().min(300)]
    );
    (wall, children_cpu() - cpu, out.stdout.len())
}

fn main() {
    if !common::benchmarking("fleet") {
        return;
    }
    let machines = common::env_usize("EDEPLOY_BENCH_MACHINES", 10_000);
    let lines = common::env_usize("EDEPLOY_BENCH_JOURNAL_LINES", 100_000);
    let runs = common::env_usize("EDEPLOY_BENCH_RUNS", 10).max(1);
    let scratch = tempfile::tempdir_in(common::scratch_parent()).unwrap();
    let root = scratch.path();
    println!("load average before: {}", common::load_average());
    let start = Instant::now();
    let cfg = build_site(root, machines, lines);
    let journal_size = fs::metadata(root.join("logs/edeploy-journal.jsonl"))
        .unwrap()
        .len();
    println!(
        "site: {machines} machines, {lines} journal lines ({:.1} MB), built in {:.1} s",
        journal_size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    let list = |filter: fleet::Filter| {
        let m = fleet::machines(&cfg, "SERVER", filter);
        assert_eq!(m.total, machines);
        pages::machines_html(&m, &["SERVER".to_owned()])
    };

    // The first views without an index each index what they have time
    // for, and say how many machines they show, until all are.
    let _ = fs::remove_file(fleet::index_path(&cfg.hw_dir));
    let mut views = Vec::new();
    let mut shown = Vec::new();
    let whole = Instant::now();
    loop {
        let start = Instant::now();
        let m = fleet::machines(&cfg, "SERVER", fleet::Filter::default());
        pages::machines_html(&m, &["SERVER".to_owned()]);
        views.push(start.elapsed());
        shown.push(m.total);
        assert_eq!(m.total + m.pending, machines);
        if (m.pending == 0 && !m.journal_pending) || views.len() == 50 {
            break;
        }
    }
    report("machines, no index: first view", &Summary::of(&views[..1]));
    report(
        "machines, no index: each view until all shown",
        &Summary::of(&views),
    );
    println!(
        "  {} views until all {machines} shown ({:.2} s in all); shown after each: {shown:?}; ms each: {:?}",
        views.len(),
        whole.elapsed().as_secs_f64(),
        views.iter().map(|v| v.as_millis()).collect::<Vec<_>>()
    );
    let index = fs::metadata(fleet::index_path(&cfg.hw_dir)).unwrap().len();
    println!("  index: {:.1} MB", index as f64 / 1e6);
    report(
        "machines, page 1",
        &time(runs, || {
            list(fleet::Filter::default());
        }),
    );
    report(
        "machines, page 50",
        &time(runs, || {
            list(fleet::Filter {
                page: 50,
                ..fleet::Filter::default()
            });
        }),
    );
    report(
        "machines, standing=unmatched",
        &time(runs, || {
            list(fleet::Filter {
                standing: Some("unmatched".into()),
                ..fleet::Filter::default()
            });
        }),
    );
    report(
        "machines, search by MAC",
        &time(runs, || {
            list(fleet::Filter {
                search: Some(mac(4242)),
                ..fleet::Filter::default()
            });
        }),
    );
    report(
        "machines as JSON",
        &time(runs, || {
            let m = fleet::machines(&cfg, "SERVER", fleet::Filter::default());
            serde_json::to_vec_pretty(&m).unwrap();
        }),
    );
    // 20 machines post again: new .hw files, 20 journal lines.
    let mut round = 0;
    report(
        "machines after 20 uploads (index brought up to date)",
        &time(runs, || {
            round += 1;
            let journal = cfg.journal.clone().unwrap();
            for k in 0..20 {
                let i = (round * 20 + k) % machines;
                let hw = root.join("hw").join(format!("{}.hw", sysname(i)));
                let text = fs::read(&hw).unwrap();
                let tmp = hw.with_extension("tmp");
                fs::write(&tmp, text).unwrap();
                fs::rename(&tmp, &hw).unwrap();
                let record = Record::new(
                    "upload.py",
                    "10.0.0.1",
                    Some("SERVER"),
                    Some(&sysname(i)),
                    Decision::Refused {
                        status: 200,
                        reason: "No more role available".into(),
                    },
                );
                journal::append(&journal, u64::MAX, &record).unwrap();
            }
            list(fleet::Filter::default());
        }),
    );
    let name = sysname(4242);
    report(
        "a machine's page (history, explain, logs, health)",
        &time(runs, || {
            let p = fleet::machine(&cfg, "SERVER", &name).unwrap();
            assert!(p.history_total > 0 && p.explain.is_some());
            pages::machine_html(&p);
        }),
    );
    report(
        "health view (3 sessions of 100 machines)",
        &time(runs, || {
            pages::health_html(&fleet::health(&cfg.health_dir));
        }),
    );

    let binary = PathBuf::from(env!("CARGO_BIN_EXE_status"));
    let conf = root.join("edeploy.conf");
    println!("as the CGI (release status binary, SCHED_IDLE): wall / CPU");
    for (what, query) in [
        ("machines", "view=machines".to_owned()),
        ("machines as JSON", "view=machines&format=json".to_owned()),
        (
            "machines, search by MAC",
            format!("view=machines&q={}", mac(4242)),
        ),
        ("a machine's page", format!("view=machine&name={name}")),
        ("health view", "view=health".to_owned()),
    ] {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut size = 0;
        for _ in 0..runs {
            let (wall, cpu, bytes) = cgi(&binary, &conf, &query);
            walls.push(wall);
            cpus.push(cpu);
            size = bytes;
        }
        let (w, c) = (Summary::of(&walls), Summary::of(&cpus));
        println!(
            "  {what:<50} wall median {:>7.1} ms max {:>7.1} ms, CPU median {:>7.1} ms ({} kB)",
            ms(w.median),
            ms(w.max),
            ms(c.median),
            size / 1000
        );
    }
    println!("load average after: {}", common::load_average());
    if std::env::var_os("EDEPLOY_BENCH_KEEP").is_some() {
        println!("site kept in {}", scratch.keep().display());
    }
}
