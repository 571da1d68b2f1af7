//! The `#[courier::service]` attribute. Use it through the `courier` crate.
//!
//! ## Layout
//!
//! - `model`: parse the trait and check every rule a service must follow,
//!   with errors pointing at the offending code.
//! - `expand`: generate the trait, server stub, async and blocking clients,
//!   and the service descriptor.
//!
//! ## Feature flags
//!
//! None.

mod expand;
mod model;

use proc_macro::TokenStream;

/// Turn a trait into a courier service. See the `courier` crate docs for
/// what is generated.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match model::ServiceArgs::parse(attr.into()) {
        Ok(args) => args,
        Err(err) => return err.to_compile_error().into(),
    };
    let item = match syn::parse::<syn::ItemTrait>(item) {
        Ok(item) => item,
        Err(err) => {
            return syn::Error::new(err.span(), "#[courier::service] goes on a trait")
                .to_compile_error()
                .into();
        }
    };
    match model::parse(args, item) {
        Ok(service) => expand::expand(&service).into(),
        Err(err) => err.to_compile_error().into(),
    }
}
