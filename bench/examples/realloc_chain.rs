//! Runs realloc chains through PyMalloc (for callgrind): `realloc_chain
//! step8|step8_large|doubling N`.
use std::alloc::{GlobalAlloc, Layout};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map_or("step8", String::as_str).to_owned();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let a = pymem::PyMalloc;
    let (start, step_fn): (usize, fn(usize) -> usize) = match shape.as_str() {
        "step8" => (8, |s| s + 8),
        "step8_large" => (520, |s| s + 8),
        _ => (8, |s| s * 2),
    };
    let mut sum = 0usize;
    for _ in 0..n {
        // SAFETY: valid layouts; each realloc passes the current layout.
        unsafe {
            let mut size = start;
            let mut p = a.alloc(Layout::from_size_align_unchecked(size, 8));
            while size < 4096 {
                let new = step_fn(size).min(4096);
                p = a.realloc(p, Layout::from_size_align_unchecked(size, 8), new);
                *p.add(new - 1) = new as u8;
                size = new;
            }
            sum += *p.add(size - 1) as usize;
            a.dealloc(p, Layout::from_size_align_unchecked(size, 8));
        }
    }
    println!("{sum}");
}
