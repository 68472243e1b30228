// A type with a lifetime derives `Trace` for `'static` only; putting a
// borrowed local in a `Gc` is an error at the `Gc::new`.
use pymem::{Gc, Trace};

#[derive(Trace)]
pub struct Token<'a> {
    text: &'a str,
}

pub fn fine() -> Gc<Token<'static>> {
    Gc::new(Token { text: "static" })
}

pub fn borrowed() {
    let s = String::from("local");
    let t = Gc::new(Token { text: &s });
    drop(t);
}
