//! Parse and validate a `#[courier::service]` trait into a [`Service`] model.
//!
//! Every rule a service must follow is checked here, with an error pointing
//! at the offending tokens, so code generation can assume a valid model.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments, Result,
    ReturnType, TraitItem, TraitItemFn, Type,
};

/// The whole service.
pub(crate) struct Service {
    pub(crate) item: ItemTrait,
    pub(crate) name: String,
    /// An explicit `version = ".."`, or `None` for the crate's version.
    pub(crate) version: Option<String>,
    pub(crate) docs: String,
    pub(crate) methods: Vec<Method>,
}

pub(crate) struct Method {
    pub(crate) ident: Ident,
    pub(crate) wire_name: String,
    pub(crate) idempotent: bool,
    pub(crate) one_way: bool,
    pub(crate) docs: String,
    pub(crate) attrs: Vec<Attribute>,
    /// Whether the first argument after `&self` is `&Context`.
    pub(crate) takes_context: bool,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: Output,
    /// `Some(T)` when the method takes `courier::Streaming<T>` (its only
    /// argument): the type of each request message.
    pub(crate) stream_in: Option<Type>,
    /// `Some(T)` when it returns `courier::ResponseStream<T>` (plain or in
    /// a `Result<_, Status>`): the type of each reply message.
    pub(crate) stream_out: Option<Type>,
    pub(crate) default_body: Option<syn::Block>,
    pub(crate) sig: syn::Signature,
}

pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

pub(crate) enum Output {
    /// `-> T` (including no return type, `()`).
    Plain(Type),
    /// `-> Result<T, E>` with the service's own error type `E`.
    AppResult(Type, Box<Type>),
    /// `-> Result<T, Status>`: the handler chooses the status itself.
    StatusResult(Type),
}

impl Output {
    pub(crate) fn ok_type(&self) -> &Type {
        match self {
            Output::Plain(ty) | Output::AppResult(ty, _) | Output::StatusResult(ty) => ty,
        }
    }

    /// The type the trait method's future resolves to.
    pub(crate) fn declared_type(&self, sig: &syn::Signature) -> Type {
        match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        }
    }
}

/// Arguments of the attribute itself: `#[courier::service(name = "..", version = "..")]`.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    name: Option<String>,
    version: Option<String>,
}

impl ServiceArgs {
    pub(crate) fn parse(tokens: TokenStream) -> Result<ServiceArgs> {
        let mut args = ServiceArgs::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let value: LitStr = meta.value()?.parse()?;
                check_wire_name(&value.value(), value.span())?;
                args.name = Some(value.value());
                Ok(())
            } else if meta.path.is_ident("version") {
                let value: LitStr = meta.value()?.parse()?;
                check_semver(&value.value(), value.span())?;
                args.version = Some(value.value());
                Ok(())
            } else {
                Err(meta.error(
                    "unknown courier::service argument; expected `name = \"..\"` or `version = \"..\"`",
                ))
            }
        });
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(args)
    }
}

pub(crate) fn parse(args: ServiceArgs, mut item: ItemTrait) -> Result<Service> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(Error::new(
            item.generics.span(),
            "courier services cannot be generic: the wire needs one concrete type per method",
        ));
    }
    if item.unsafety.is_some() || item.auto_token.is_some() {
        return Err(Error::new(item.ident.span(), "courier services must be plain traits"));
    }
    let mut errors: Option<Error> = None;
    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let result = match trait_item {
            TraitItem::Fn(method) => parse_method(method),
            other => Err(Error::new(other.span(), "courier services may only contain `async fn` methods")),
        };
        match result {
            Ok(method) => methods.push(method),
            Err(err) => match &mut errors {
                Some(all) => all.combine(err),
                None => errors = Some(err),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    let mut seen = std::collections::HashSet::new();
    for method in &methods {
        if !seen.insert(method.wire_name.clone()) {
            return Err(Error::new(
                method.ident.span(),
                format!(
                    "two methods are named `{}` on the wire; rename one with #[courier(name = \"..\")]",
                    method.wire_name
                ),
            ));
        }
    }
    Ok(Service {
        name: args.name.unwrap_or_else(|| item.ident.to_string()),
        version: args.version,
        docs: docs(&item.attrs),
        methods,
        item,
    })
}

fn parse_method(method: &mut TraitItemFn) -> Result<Method> {
    let sig = &method.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            format!("courier service methods must be `async fn`: write `async fn {}`", sig.ident),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "courier service methods cannot be generic: each method needs concrete argument and result types to cross the wire",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new(variadic.span(), "courier service methods cannot be variadic"));
    }
    if sig.constness.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        return Err(Error::new(sig.ident.span(), "courier service methods must be plain `async fn`"));
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            if receiver.reference.is_none() || receiver.mutability.is_some() || receiver.colon_token.is_some()
            {
                return Err(Error::new(
                    receiver.span(),
                    "courier service methods take `&self`: the server shares one instance across concurrent calls",
                ));
            }
        }
        _ => {
            return Err(Error::new(
                sig.ident.span(),
                "courier service methods take `&self` as their first argument",
            ));
        }
    }

    let mut takes_context = false;
    let mut args = Vec::new();
    for (position, input) in inputs.enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(Error::new(input.span(), "unexpected receiver"));
        };
        let Pat::Ident(pat) = &*typed.pat else {
            return Err(Error::new(
                typed.pat.span(),
                "courier service arguments must be plain names (`a: i64`), not patterns",
            ));
        };
        if pat.by_ref.is_some() || pat.subpat.is_some() {
            return Err(Error::new(pat.span(), "courier service arguments must be plain names"));
        }
        if position == 0 && is_context_ref(&typed.ty) {
            takes_context = true;
            continue;
        }
        match &*typed.ty {
            Type::Reference(_) => {
                return Err(Error::new(
                    typed.ty.span(),
                    "courier service arguments must be owned types: they are decoded from the wire (use `String` for `&str`, `Vec<T>` for `&[T]`); only `&courier::Context` may be borrowed, as the first argument",
                ));
            }
            Type::ImplTrait(_) => {
                return Err(Error::new(
                    typed.ty.span(),
                    "courier service arguments must be concrete types, not `impl Trait`",
                ));
            }
            _ => {}
        }
        args.push(Arg { ident: pat.ident.clone(), ty: (*typed.ty).clone() });
    }

    let output = match &sig.output {
        ReturnType::Default => Output::Plain(syn::parse_quote!(())),
        ReturnType::Type(_, ty) => classify_output(ty)?,
    };
    let (stream_in, stream_out) = stream_shape(&args, &output)?;

    let (idempotent, one_way, wire_name) = method_attrs(method)?;
    if one_way && (stream_in.is_some() || stream_out.is_some()) {
        return Err(Error::new(
            method.sig.ident.span(),
            "streaming methods cannot be one-way: a stream ends with the server's status",
        ));
    }
    if one_way && !matches!(&output, Output::Plain(Type::Tuple(t)) if t.elems.is_empty()) {
        return Err(Error::new(
            method.sig.output.span(),
            "one-way methods cannot return a value: the caller never hears back",
        ));
    }
    let docs = docs(&method.attrs);
    Ok(Method {
        wire_name: wire_name.unwrap_or_else(|| pascal_case(&method.sig.ident.to_string())),
        ident: method.sig.ident.clone(),
        idempotent,
        one_way,
        docs,
        attrs: method.attrs.clone(),
        takes_context,
        args,
        output,
        stream_in,
        stream_out,
        default_body: method.default.clone(),
        sig: method.sig.clone(),
    })
}

/// The element type of `Wrapper<T>` if `ty` is one (by its last path
/// segment, so `courier::Streaming<T>` and an imported `Streaming<T>` both
/// count).
fn wrapped<'t>(ty: &'t Type, wrapper: &str) -> Option<&'t Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else { return None };
    match generics.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(inner)] => Some(inner),
        _ => None,
    }
}

/// Which way a method streams, from its arguments and result; the shapes
/// that cannot work are refused here with the shape that would.
fn stream_shape(args: &[Arg], output: &Output) -> Result<(Option<Type>, Option<Type>)> {
    let mut stream_in = None;
    for arg in args {
        if wrapped(&arg.ty, "ResponseStream").is_some() {
            return Err(Error::new_spanned(
                &arg.ty,
                "`ResponseStream<T>` is what a method returns to stream its replies; to receive a stream of requests, take `courier::Streaming<T>`",
            ));
        }
        if let Some(inner) = wrapped(&arg.ty, "Streaming") {
            if args.len() > 1 {
                return Err(Error::new_spanned(
                    &arg.ty,
                    "a method that takes a `Streaming<T>` of requests takes nothing else (besides `&courier::Context`): put what else it needs in the messages",
                ));
            }
            stream_in = Some(inner.clone());
        }
    }
    let ok = output.ok_type();
    if wrapped(ok, "Streaming").is_some() {
        return Err(Error::new_spanned(
            ok,
            "to stream replies, return `courier::ResponseStream<T>` (or `Result<ResponseStream<T>, courier::Status>`); `Streaming<T>` is what a method receives",
        ));
    }
    let stream_out = wrapped(ok, "ResponseStream").cloned();
    if let (Some(_), Output::AppResult(_, err)) = (&stream_out, output) {
        return Err(Error::new_spanned(
            err,
            "a streaming method fails with `courier::Status`: return `Result<ResponseStream<T>, courier::Status>` (a stream's own errors are its items' `Err`)",
        ));
    }
    Ok((stream_in, stream_out))
}

fn classify_output(ty: &Type) -> Result<Output> {
    if let Type::ImplTrait(_) = ty {
        return Err(Error::new(
            ty.span(),
            "courier service methods must return a concrete type, not `impl Trait`",
        ));
    }
    if let Type::Reference(_) = ty {
        return Err(Error::new(ty.span(), "courier service methods must return an owned type"));
    }
    let Type::Path(path) = ty else {
        return Ok(Output::Plain(ty.clone()));
    };
    let Some(last) = path.path.segments.last() else {
        return Ok(Output::Plain(ty.clone()));
    };
    if last.ident != "Result" {
        return Ok(Output::Plain(ty.clone()));
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Ok(Output::Plain(ty.clone()));
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    let [ok, err] = types.as_slice() else {
        return Ok(Output::Plain(ty.clone()));
    };
    if last_ident_is(err, "Status") {
        Ok(Output::StatusResult((*ok).clone()))
    } else {
        Ok(Output::AppResult((*ok).clone(), Box::new((*err).clone())))
    }
}

fn last_ident_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|s| s.ident == name && s.arguments.is_none()))
}

fn is_context_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(reference) if reference.mutability.is_none() && last_ident_is(&reference.elem, "Context"))
}

/// Read and strip `#[courier(..)]` attributes of a method.
fn method_attrs(method: &mut TraitItemFn) -> Result<(bool, bool, Option<String>)> {
    let mut idempotent = false;
    let mut one_way = false;
    let mut name = None;
    let mut kept = Vec::new();
    for attr in method.attrs.drain(..) {
        if !attr.path().is_ident("courier") {
            kept.push(attr);
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                idempotent = true;
                Ok(())
            } else if meta.path.is_ident("one_way") {
                one_way = true;
                Ok(())
            } else if meta.path.is_ident("name") {
                let value: LitStr = meta.value()?.parse()?;
                check_wire_name(&value.value(), value.span())?;
                name = Some(value.value());
                Ok(())
            } else {
                Err(meta.error(
                    "unknown courier method attribute; expected `idempotent`, `one_way` or `name = \"..\"`",
                ))
            }
        })?;
    }
    method.attrs = kept;
    Ok((idempotent, one_way, name))
}

fn check_wire_name(name: &str, span: Span) -> Result<()> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Error::new(span, "wire names must be ASCII identifiers (letters, digits, `_`)"))
    }
}

fn check_semver(version: &str, span: Span) -> Result<()> {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numeric =
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if numeric {
        Ok(())
    } else {
        Err(Error::new(span, "service versions are semver: `MAJOR.MINOR.PATCH`, e.g. \"1.2.0\""))
    }
}

fn docs(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                    Some(s.value().trim().to_owned())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// `get_user_by_id` -> `GetUserById`.
pub(crate) fn pascal_case(snake: &str) -> String {
    snake
        .trim_start_matches("r#")
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A type as the user wrote it, for descriptors (`Vec<String>`).
pub(crate) fn type_string(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    // Token streams print with spaces around punctuation; tidy the common ones.
    raw.replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace("& ", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_cases_method_names() {
        assert_eq!(pascal_case("add"), "Add");
        assert_eq!(pascal_case("get_user_by_id"), "GetUserById");
        assert_eq!(pascal_case("_private"), "Private");
        assert_eq!(pascal_case("r#type"), "Type");
    }

    #[test]
    fn types_print_tidily() {
        let ty: Type = syn::parse_quote!(std::collections::HashMap<String, Vec<u8>>);
        assert_eq!(type_string(&ty), "std::collections::HashMap<String, Vec<u8>>");
    }
}
