//! Draws PyMalloc's heap as an SVG: every arena a row of 63 pools, each pool
//! coloured by its size class and shaded by how full it is, with the
//! numbers of `alloc_stats()` beside it. Drawn twice: after a workload that
//! fragments memory (allocate a lot, free most of it at random), and after
//! `release_free_memory()`.
//!
//! ```text
//! cargo run --release --example heap_map [-- out.svg]
//! ```

use std::fmt::Write as _;

#[global_allocator]
static GLOBAL: pymem::PyMalloc = pymem::PyMalloc;

const CELL: usize = 12;
const ROW_GAP: usize = 3;
const LEFT: usize = 150;

/// A fragmenting workload: 300,000 objects of mixed sizes, then 90% of them
/// freed at random, leaving many pools lightly used; then a burst of 200,000
/// short-lived 64-byte objects, all freed, leaving whole arenas empty (kept
/// mapped for a moment, in case the program needs them again). Returns what
/// survives.
fn fragment() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut objects: Vec<Vec<u8>> = (0..300_000)
        .map(|_| vec![1u8; 16 + (next() % 480) as usize])
        .collect();
    for object in objects.iter_mut() {
        if next() % 10 != 0 {
            *object = Vec::new();
        }
    }
    objects.retain(|o| !o.is_empty());
    let burst: Vec<Box<[u8; 64]>> = (0..200_000).map(|_| Box::new([2; 64])).collect();
    drop(burst);
    objects
}

/// A colour per size class: hue around the wheel by block size; lightness
/// from how full the pool is (pale = nearly empty, deep = full).
fn pool_colour(block_size: usize, fullness: f64) -> String {
    let hue = (block_size as f64 / 512.0 * 300.0) as u32;
    let lightness = 92.0 - 55.0 * fullness;
    format!("hsl({hue},70%,{lightness:.0}%)")
}

fn draw_panel(svg: &mut String, top: usize, title: &str) -> usize {
    let map = pymem::heap_map();
    let stats = pymem::alloc_stats();
    let width = LEFT + CELL * (map.slots_per_arena - 1);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="{}" font-size="16" font-weight="bold">{title}</text>"#,
        top + 16
    );
    let mut y = top + 28;
    for (index, arena) in map.arenas.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}" font-size="10" font-family="monospace">{:#x}</text>"#,
            y + CELL - 2,
            arena.address
        );
        for slot in 1..map.slots_per_arena {
            let x = LEFT + (slot - 1) * CELL;
            let pool = map
                .pools
                .iter()
                .find(|p| p.arena == index && p.slot == slot);
            let (fill, tip) = match pool {
                Some(p) => (
                    pool_colour(p.block_size, p.blocks_in_use as f64 / p.capacity as f64),
                    format!(
                        "{} B blocks, {}/{} in use",
                        p.block_size, p.blocks_in_use, p.capacity
                    ),
                ),
                None => ("#ffffff".to_string(), "free pool slot".to_string()),
            };
            let _ = writeln!(
                svg,
                r##"<rect x="{x}" y="{y}" width="{}" height="{}" fill="{fill}" stroke="#bbb" stroke-width="0.5"><title>{tip}</title></rect>"##,
                CELL - 1,
                CELL - 1
            );
        }
        y += CELL + ROW_GAP;
    }
    let lines = [
        format!("arenas in use: {}", stats.arenas_in_use),
        format!("pools in use: {}", stats.pools_in_use),
        format!("small blocks in use: {}", stats.small_blocks_in_use),
        format!("small bytes in use: {}", stats.small_bytes_in_use),
        format!("arenas freed (total): {}", stats.arenas_freed_total),
        format!("peak bytes: {}", stats.peak_bytes_in_use),
    ];
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="12" font-family="monospace">{line}</text>"#,
            width + 20,
            top + 44 + i * 16
        );
    }
    println!(
        "{title}: {} arenas, {} pools",
        map.arenas.len(),
        map.pools.len()
    );
    y.max(top + 44 + lines.len() * 16) + 20
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "heap_map.svg".to_string());
    let survivors = fragment();
    let mut body = String::new();
    let mid = draw_panel(
        &mut body,
        10,
        "After 300,000 objects with 90% freed at random, and a burst of 200,000 freed",
    );
    let released = pymem::release_free_memory();
    let bottom = draw_panel(
        &mut body,
        mid,
        &format!("After release_free_memory() ({released} bytes returned to the OS)"),
    );
    let mut legend = String::new();
    for (i, size) in (16..=512).step_by(48).enumerate() {
        let _ = writeln!(
            legend,
            r##"<rect x="{}" y="{bottom}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="10">{size} B</text>"##,
            10 + i * 60,
            pool_colour(size, 0.8),
            24 + i * 60,
            bottom + 9
        );
    }
    let width = LEFT + CELL * 63 + 260;
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
{body}{legend}</svg>
"#,
        bottom + 30
    );
    std::fs::write(&out, svg).expect("write the SVG");
    println!("wrote {out} ({} objects still alive)", survivors.len());
}
