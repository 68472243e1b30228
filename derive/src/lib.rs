//! `#[derive(Trace)]` for `pymem::Gc`. Placeholder until the collector lands.
use proc_macro::TokenStream;

/// Derives `pymem::Trace`.
#[proc_macro_derive(Trace, attributes(trace))]
pub fn derive_trace(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
