//! Fleets of machines made from the two real servers of
//! tests/fixtures/real-hw (an HP ProLiant and a Dell PowerEdge), for the
//! tests and the benchmark of `edeploy plan`: each copy has its own serial
//! number, MAC address and IPv4 address, the rest of the real hardware.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use edeploy::hw::{self, HwValue, Item};
use edeploy::provision;

pub const REAL_HW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real-hw");

/// The hardware of a real machine: "hp-proliant-dl360p-gen8" or
/// "dell-poweredge-m520".
pub fn real(name: &str) -> Vec<Item> {
    let path = Path::new(REAL_HW).join("hw").join(format!("{name}.hw"));
    hw::parse_hw(&path, &fs::read(&path).expect("real .hw file")).expect("parse real .hw")
}

/// `items` with another serial number, first MAC address and first IPv4
/// address.
pub fn variant(items: &[Item], serial: &str, mac: &str, ipv4: &str) -> Vec<Item> {
    let mut items = items.to_vec();
    let mut set = |pick: &dyn Fn(&Item) -> bool, value: &str| {
        if let Some(item) = items.iter_mut().find(|i| pick(i)) {
            item[3] = HwValue::from(value);
        }
    };
    set(
        &|i| i[0] == "system" && i[1] == "product" && i[2] == "serial",
        serial,
    );
    set(&|i| i[0] == "network" && i[2] == "serial", mac);
    set(&|i| i[0] == "network" && i[2] == "ipv4", ipv4);
    items
}

/// A MAC address made from `n`.
pub fn mac(n: usize) -> String {
    let b = (n as u32).to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// Saves `items` in `hw_dir` as the server does (`<sysname>.hw`), last seen
/// at `seen`; returns the file and the sysname.
pub fn save(hw_dir: &Path, items: &[Item], seen: SystemTime) -> (PathBuf, String) {
    let (sysname, _) = hw::sysname_and_macs(items);
    let file = hw_dir.join(provision::hw_file_name(&sysname));
    fs::write(&file, hw::items_text(items)).expect("write .hw");
    let f = fs::File::options()
        .write(true)
        .open(&file)
        .expect("open .hw");
    f.set_modified(seen).expect("set the modification time");
    (file, sysname)
}

/// A time `n` minutes after an arbitrary origin: the order machines were seen.
pub fn minute(n: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 60 * n)
}
