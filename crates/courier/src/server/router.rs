//! Routing `Service.Method` names to a service and method index.

use std::collections::HashMap;
use std::sync::Arc;

use crate::service::{MethodDescriptor, Service};
use crate::status::Status;

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) service: Arc<dyn Service>,
    pub(crate) index: usize,
    pub(crate) method: &'static MethodDescriptor,
    /// Whether this method's handlers may run on the connection's task.
    pub(crate) inline: Arc<super::inline::InlinePolicy>,
    /// The method's adaptive concurrency limit, if the server has them:
    /// kept on the route, so admission finds it without a lookup.
    pub(crate) adaptive: Option<Arc<super::adaptive::Limiter>>,
}

impl Route {
    /// Refuse a codec the service's types cannot be encoded in.
    pub(crate) fn check_codec(&self, codec: crate::codec::Codec) -> Result<(), Status> {
        let schema = self.service.descriptor().schema;
        if schema.accepts(codec) {
            return Ok(());
        }
        Err(Status::invalid_argument(match schema {
            crate::service::Schema::Protobuf { .. } => format!(
                "{} is a .proto service: call it with protobuf or JSON, not {codec}",
                self.method.full_name
            ),
            _ => format!(
                "{} is defined with serde types: call it with the binary or JSON codec (over gRPC: application/grpc+json), not {codec}",
                self.method.full_name
            ),
        }))
    }
}

#[derive(Clone, Default)]
pub(crate) struct Router {
    routes: HashMap<&'static str, Route>,
    /// The same routes by URL path, `/Service/Method`, as gRPC and HTTP
    /// name them.
    paths: HashMap<String, Route>,
    services: Vec<Arc<dyn Service>>,
}

/// Two services with the same name were added to one server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service `{0}` was added twice")]
pub struct DuplicateService(pub String);

impl Router {
    pub(crate) fn add(&mut self, service: Arc<dyn Service>) -> Result<(), DuplicateService> {
        let descriptor = service.descriptor();
        if self.services.iter().any(|s| s.descriptor().name == descriptor.name) {
            return Err(DuplicateService(descriptor.name.to_owned()));
        }
        for (index, method) in descriptor.methods.iter().enumerate() {
            let route =
                Route { service: service.clone(), index, method, inline: Arc::default(), adaptive: None };
            self.paths.insert(format!("/{}/{}", descriptor.name, method.name), route.clone());
            self.routes.insert(method.full_name, route);
        }
        self.services.push(service);
        Ok(())
    }

    /// Give every method an adaptive limit of its own (the same one
    /// whether it is reached by name or by path).
    pub(crate) fn limit_adaptively(&mut self, settings: super::AdaptiveLimit) {
        for route in self.routes.values_mut() {
            route.adaptive = Some(Arc::new(super::adaptive::Limiter::new(settings)));
        }
        for route in self.paths.values_mut() {
            route.adaptive = self.routes.get(route.method.full_name).and_then(|named| named.adaptive.clone());
        }
    }

    pub(crate) fn services(&self) -> &[Arc<dyn Service>] {
        &self.services
    }

    /// The route for a URL path (`/Service/Method`), or `Unimplemented`
    /// saying what exists instead.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn route_path(&self, path: &str) -> Result<&Route, Status> {
        if let Some(route) = self.paths.get(path) {
            return Ok(route);
        }
        match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
            Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
                self.route(&format!("{service}.{method}"))
            }
            _ => Err(Status::unimplemented(format!("`{}` is not a /Service/Method path", shorten(path)))),
        }
    }

    /// The route for a full method name, or `Unimplemented` saying what
    /// exists instead.
    pub(crate) fn route(&self, full_name: &str) -> Result<&Route, Status> {
        if let Some(route) = self.routes.get(full_name) {
            return Ok(route);
        }
        // The name is echoed back: keep what a peer can make us send small.
        let full_name = shorten(full_name);
        let Some((service_name, method_name)) = full_name.rsplit_once('.') else {
            let offered: Vec<&str> = self.services.iter().map(|s| s.descriptor().name).collect();
            return Err(Status::unimplemented(format!(
                "`{full_name}` is not a method name: call `Service.Method` (this server offers: {})",
                offered.join(", ")
            )));
        };
        match self.services.iter().find(|s| s.descriptor().name == service_name) {
            Some(service) => {
                let offered: Vec<&str> = service.descriptor().methods.iter().map(|m| m.name).collect();
                Err(Status::unimplemented(format!(
                    "unknown method `{method_name}` on service `{service_name}` (it offers: {})",
                    offered.join(", ")
                )))
            }
            None => {
                let offered: Vec<&str> = self.services.iter().map(|s| s.descriptor().name).collect();
                Err(Status::unimplemented(format!(
                    "unknown service `{service_name}` in call to `{full_name}` (this server offers: {})",
                    offered.join(", ")
                )))
            }
        }
    }
}

/// At most 128 characters of a name a peer sent, for error messages.
fn shorten(name: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 128;
    match name.char_indices().nth(MAX) {
        None => std::borrow::Cow::Borrowed(name),
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}...", &name[..cut])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_routes_and_explain_misses() {
        let router = Router::default();
        let err = router.route_path("/Calculator/Add").err().expect("nothing is served");
        assert!(err.message().contains("unknown service `Calculator`"), "{err}");
        let err = router.route_path("/not-a-method").err().expect("not a method path");
        assert!(err.message().contains("not a /Service/Method path"), "{err}");
    }

    #[test]
    fn a_name_without_a_service_says_how_to_name_a_method() {
        let router = Router::default();
        let err = router.route("KvGet").err().expect("not a method name");
        assert!(err.message().contains("`KvGet` is not a method name: call `Service.Method`"), "{err}");
    }

    #[test]
    fn long_names_are_shortened_in_errors() {
        let router = Router::default();
        let err = router.route(&"x".repeat(100_000)).err().expect("no such method");
        assert!(err.message().len() < 400, "{}", err.message().len());
    }
}
