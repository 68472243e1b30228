// `Gc` is neither `Send` nor `Sync`: each thread has its own collector.
use pymem::Gc;

pub fn send() {
    let g = Gc::new(vec![1u8, 2, 3]);
    std::thread::spawn(move || drop(g));
}
