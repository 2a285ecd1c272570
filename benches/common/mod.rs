//! What both benchmarks share: the profile they provision (specs, configure
//! script, CMDB model), distinct machines' hardware descriptions, the
//! `edeploy.conf` pointing at a scratch root, and latency statistics.
//!
//! Benchmarks are programs, not tests: `cargo bench` passes `--bench`, and
//! `cargo test --all-targets` (which builds and runs them too) does not, so
//! without it they only say how to run them.

#![allow(dead_code)] // each benchmark uses its own part of this module

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edeploy::generate;
use edeploy::literal::{self, Dict, Value};

pub mod http;

/// Name of the profile every benchmark request matches.
pub const PROFILE: &str = "bench";

/// Whether `cargo bench` (rather than `cargo test`) runs us.
pub fn benchmarking(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    eprintln!(
        "{name}: a benchmark; run it with `cargo bench --bench {name}` (see bench/README.md)"
    );
    false
}

/// A number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// The `upload` binary to measure: `$EDEPLOY_BENCH_UPLOAD` (to compare
/// builds), else the one `cargo bench` built (target/release/upload).
pub fn upload_binary() -> PathBuf {
    std::env::var_os("EDEPLOY_BENCH_UPLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_upload")))
}

/// Builds the null CGI (bench/null_cgi.rs: reads the body, prints a fixed
/// answer) with rustc (`$RUSTC`, else `rustc`) as the executable `out`.
pub fn install_null_cgi(out: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/null_cgi.rs");
    let status = std::process::Command::new(&rustc)
        .args(["-O", "--edition", "2021", "-o"])
        .arg(out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("{rustc}: {e}"));
    assert!(status.success(), "building the null CGI failed");
    fs::set_permissions(out, fs::Permissions::from_mode(0o755)).expect("chmod null CGI");
}

/// Where scratch trees go: `$EDEPLOY_BENCH_DIR`, else the system temporary
/// directory. Its file system matters: every request fsyncs its writes.
pub fn scratch_parent() -> PathBuf {
    std::env::var_os("EDEPLOY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The specs of a KVM guest on the provisioning network, as in the bundled
/// legacy-config/kvm-test.specs.
pub const SPECS: &str = "[
    ('system', 'product', 'vendor', 'QEMU'),
    ('disk', '$disk', 'size', 'gt(4)'),
    ('network', '$eth', 'ipv4', 'network(192.168.0.0/16)'),
    ('network', '$eth', 'serial', '$mac'),
]
";

pub const CONFIGURE: &str = "set_role('bench', 'D7-H.1.0.0', var['disk'])

config('/etc/hostname').write(var['hostname'] + '\\n')
with config('/etc/network/interfaces') as f:
    f.write('auto %s\\niface %s inet static\\n  address %s\\n  netmask %s\\n  gateway %s\\n'
            % (var['eth'], var['eth'], var['ip'], var['netmask'], var['gateway']))
";

/// The `generate()` model of an `entries`-entry CMDB (at most 256, or a
/// multiple of 256 up to 65,536): consecutive host names and addresses.
pub fn cmdb_model(entries: usize) -> String {
    let ip = match entries {
        1..=256 => format!("10.0.0.0-{}", entries - 1),
        _ if entries.is_multiple_of(256) && entries <= 65_536 => {
            format!("10.0.0-{}.0-255", entries / 256 - 1)
        }
        _ => panic!("unsupported CMDB size {entries}"),
    };
    format!(
        "generate({{'gateway': '10.0.0.1',
          'hostname': 'node00001-{entries:05}',
          'ip': '{ip}',
          'netmask': '255.255.0.0'}})
"
    )
}

/// The same CMDB expanded, as `upload.py` leaves it once the first `used`
/// entries were given to machines: those hold the machine's variables
/// (disk, eth, mac) and `'used': 1`. Printed as pprint does.
pub fn cmdb_expanded(entries: usize, used: usize) -> Vec<u8> {
    let model = cmdb_model(entries);
    let model = match literal::parse(Path::new("model"), model.as_bytes()) {
        Ok(literal::Document::Generate(m)) => m,
        other => panic!("cmdb model: {other:?}"),
    };
    let list: Vec<Value> = generate::generate(&model)
        .expect("cmdb model expands")
        .enumerate()
        .map(|(i, entry)| {
            let Value::Dict(mut entry) = entry else {
                panic!("generate() gave a non-dict")
            };
            if i < used {
                let mut vars = Dict::new();
                vars.insert(Value::str("disk"), Value::str("vda"));
                vars.insert(Value::str("eth"), Value::str("eth0"));
                vars.insert(Value::str("mac"), Value::str(&mac(1_000_000 + i)));
                entry.update(&vars);
                entry.insert(Value::str("used"), Value::Int(1));
            }
            Value::Dict(entry)
        })
        .collect();
    assert_eq!(list.len(), entries);
    literal::pformat(&Value::List(list))
}

/// A locally administered MAC address unique to machine `n`.
pub fn mac(n: usize) -> String {
    let b = (n as u32).to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// What machine `n`'s initrd posts: a KVM guest's hardware description
/// (as legacy-config/hw/kvm-test.json) with its own serial number and MACs.
pub fn hw_json(n: usize) -> String {
    let lines: Vec<[String; 4]> = [
        ["disk", "vda", "size", "20"],
        ["disk", "vda", "vendor", "0x1af4"],
        ["disk", "vda", "model", "Virtio Block Device"],
        ["system", "product", "name", "edeploy_bench_vm ()"],
        ["system", "product", "vendor", "QEMU"],
        ["system", "product", "version", "pc-i440fx-7.2"],
        ["system", "product", "serial", "@SERIAL@"],
        ["memory", "total", "size", "2147483648"],
        ["cpu", "physical", "number", "1"],
        [
            "cpu",
            "physical_0",
            "product",
            "QEMU Virtual CPU version 2.5+",
        ],
        ["network", "eth0", "serial", "@MAC0@"],
        ["network", "eth0", "ipv4", "192.168.122.3"],
        ["network", "eth0", "ipv4-netmask", "255.255.255.0"],
        ["network", "eth0", "link", "yes"],
        ["network", "eth0", "driver", "virtio_net"],
        ["network", "eth1", "serial", "@MAC1@"],
        ["network", "eth1", "link", "no"],
        ["network", "eth1", "driver", "virtio_net"],
    ]
    .iter()
    .map(|l| {
        l.map(|f| match f {
            "@SERIAL@" => format!("BENCH{n:08}"),
            "@MAC0@" => mac(2 * n),
            "@MAC1@" => mac(2 * n + 1),
            f => f.to_owned(),
        })
    })
    .collect();
    serde_json::to_string_pretty(&lines).expect("hw json")
}

/// Writes the `edeploy.conf` file `conf` for data directories under `data`,
/// which it creates (config, hw, logs, health, lock).
pub fn write_edeploy_conf(conf: &Path, data: &Path) {
    for d in ["config", "hw", "logs", "health", "lock"] {
        fs::create_dir_all(data.join(d)).expect("create data directories");
    }
    let d = data.display();
    fs::write(
        conf,
        format!(
            "[SERVER]
CONFIGDIR  = {d}/config/
HWDIR      = {d}/hw/
LOGDIR     = {d}/logs/
HEALTHDIR  = {d}/health/
LOCKFILE   = {d}/lock/edeploy.lock
USEPXEMNGR = False
"
        ),
    )
    .expect("write edeploy.conf");
}

/// Writes the profile's files into a configuration directory: `state`
/// (`quota` installations, `None` for `'*'`), specs, configure and, when
/// given, the CMDB text.
pub fn write_profile(config_dir: &Path, quota: Option<usize>, cmdb: Option<&[u8]>) {
    let quota = quota.map_or("'*'".to_owned(), |n| n.to_string());
    let state = format!("[('{PROFILE}', {quota})]\n");
    let mut files = vec![
        ("state".to_owned(), state.as_bytes()),
        (format!("{PROFILE}.specs"), SPECS.as_bytes()),
        (format!("{PROFILE}.configure"), CONFIGURE.as_bytes()),
    ];
    if let Some(cmdb) = cmdb {
        files.push((format!("{PROFILE}.cmdb"), cmdb));
    }
    for (name, text) in files {
        fs::write(config_dir.join(&name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}

/// Order statistics of a set of durations.
pub struct Summary {
    pub count: usize,
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        let mut s = samples.to_vec();
        s.sort();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them below or equal.
            let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        };
        Summary {
            count: s.len(),
            median: at(0.5),
            p99: at(0.99),
            max: *s.last().expect("at least one sample"),
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The 1, 5 and 15 minute load averages: figures taken on a busy machine
/// are not worth much.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
