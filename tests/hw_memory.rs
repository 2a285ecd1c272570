//! Memory of reading a hardware upload (issue 11): the JSON is read
//! straight into items, so what a 4 MiB upload (MAXHWSIZE) costs is its
//! items, whatever its shape. A tree of the whole document cost up to 140 MB
//! (2 million zeros). Measured with a counting allocator: the peak of live
//! heap bytes while parsing, the input excluded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use edeploy::hw::{parse_hw, HwLimits, DEFAULT_MAX_HW_LINES};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests share the counters: one at a time, from their first allocation.
static SERIAL: Mutex<()> = Mutex::new(());

const MAX_HW_SIZE: usize = 4 << 20;

/// Peak heap bytes allocated while parsing `src` above what was live before,
/// and the parse's error message, if any.
fn peak_while_parsing(src: &[u8]) -> (usize, Option<String>) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = parse_hw(Path::new("hw.json"), src);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    eprintln!("{} bytes of JSON: peak {peak} bytes", src.len());
    (peak, result.err().map(|e| e.to_string()))
}

const MIB: usize = 1 << 20;

#[test]
fn hostile_shapes_cost_no_more_than_their_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 4 MiB of `0,`: 2 million lines, refused by their number.
    let mut outer = b"[".to_vec();
    while outer.len() < MAX_HW_SIZE - 2 {
        outer.extend_from_slice(b"0,");
    }
    outer.extend_from_slice(b"0]");
    let (peak, err) = peak_while_parsing(&outer);
    let lines = (outer.len() - 1) / 2;
    assert_eq!(
        err.as_deref(),
        Some(
            format!(
                "hw.json: {lines} hardware lines, more than MAXHWLINES ({DEFAULT_MAX_HW_LINES})"
            )
            .as_str()
        )
    );
    assert!(peak < MIB, "2 million lines: {peak} bytes");

    // One field holding 2 million numbers, and one holding an object.
    let mut field = br#"[["a","b","c",["#.to_vec();
    while field.len() < MAX_HW_SIZE - 4 {
        field.extend_from_slice(b"0,");
    }
    field.extend_from_slice(b"0]]]");
    let (peak, err) = peak_while_parsing(&field);
    assert_eq!(
        err.as_deref(),
        Some("hw.json: element 0: field 3 is a list, expected a string or a number")
    );
    assert!(peak < MIB, "a field of 2 million numbers: {peak} bytes");

    let mut object = br#"[["a","b","c",{"#.to_vec();
    let mut i = 0;
    while object.len() < MAX_HW_SIZE - 16 {
        object.extend_from_slice(format!("\"{i}\":[0],").as_bytes());
        i += 1;
    }
    object.extend_from_slice(b"\"\":0}]]");
    let (peak, err) = peak_while_parsing(&object);
    assert_eq!(
        err.as_deref(),
        Some("hw.json: element 0: field 3 is an object, expected a string or a number")
    );
    assert!(peak < MIB, "a field of 400,000 keys: {peak} bytes");
}

/// The largest upload the default limits accept: MAXHWLINES lines filling
/// MAXHWSIZE. Its items are about the size of the text (plus 128 bytes a
/// line): no more is held.
#[test]
fn largest_accepted_upload_costs_its_items() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limits = HwLimits::default();
    let value = "x".repeat(MAX_HW_SIZE / limits.max_lines - 32);
    let lines: Vec<String> = (0..limits.max_lines)
        .map(|i| format!(r#"["pad","p{i}","value","{value}"]"#))
        .collect();
    let src = format!("[{}]", lines.join(","));
    assert!(src.len() <= MAX_HW_SIZE, "{}", src.len());
    let (peak, err) = peak_while_parsing(src.as_bytes());
    assert_eq!(err, None);
    assert!(peak < 12 * MIB, "{} bytes of JSON: {peak} bytes", src.len());
}
