//! Every admin route in one table: method, path, who may call it, and what it does. The router, the
//! access checks and the OpenAPI document are all built from this table, so they cannot drift apart.

use http::Method;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (liveness, metrics, the API description, bootstrap and login).
    Public,
    /// Any signed-in user; handlers narrow it further (e.g. one's own keys).
    User,
    Admin,
}

/// What a route does; the dispatcher maps each to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Health,
    Metrics,
    OpenApi,
    AdminInit,
    SecretGenerate,
    Login,
    Refresh,
    Logout,
    Revoke,
    UsersList,
    UserCreate,
    UserGet,
    UserUpdate,
    UserDisable,
    KeysList,
    KeyCreate,
    KeyUpdate,
    KeyDelete,
    ProvidersList,
    ProviderCreate,
    ProviderGet,
    ProviderUpdate,
    ProviderDelete,
    ProviderModels,
    ProviderHealth,
    ProviderMetrics,
    ProviderKeysList,
    ProviderKeyCreate,
    ProviderKeyUpdate,
    ProviderKeyDelete,
    LogicalList,
    LogicalCreate,
    LogicalGet,
    LogicalUpdate,
    LogicalDelete,
    LogicalUpstreams,
    RoutingDecide,
    SessionGet,
    SessionDelete,
}

pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub op: Op,
    pub summary: &'static str,
    pub tag: &'static str,
}

macro_rules! routes {
    ($($method:ident $path:literal $access:ident $op:ident $tag:literal $summary:literal;)*) => {
        pub fn routes() -> Vec<RouteSpec> {
            vec![$(RouteSpec {
                method: Method::$method,
                path: $path,
                access: Access::$access,
                op: Op::$op,
                summary: $summary,
                tag: $tag,
            }),*]
        }
    };
}

routes! {
    GET    "/health"                                Public Health           "ops"       "Liveness";
    GET    "/metrics"                               Public Metrics          "ops"       "Prometheus metrics";
    GET    "/openapi.json"                          Public OpenApi          "ops"       "This API's OpenAPI 3 document";
    POST   "/system/admin/init"                     Public AdminInit        "system"    "Create the first admin (only while no user exists); returns its password once";
    POST   "/system/secret-key/generate"            Admin  SecretGenerate   "system"    "Generate a random value suitable for SECRET_KEY (not applied)";
    POST   "/auth/login"                            Public Login            "auth"      "Exchange username and password for an access and a refresh token";
    POST   "/auth/refresh"                          Public Refresh          "auth"      "Exchange a refresh token for a new token pair (the old refresh token is revoked)";
    POST   "/auth/logout"                           User   Logout           "auth"      "End the access token's sign-in (every token it bought) and, when given, a refresh token's";
    POST   "/auth/revoke"                           Public Revoke           "auth"      "End a refresh token's sign-in with that token alone (no access token needed)";
    GET    "/users"                                 Admin  UsersList        "users"     "List users";
    POST   "/users"                                 Admin  UserCreate       "users"     "Create a user (a password is generated and returned once when none is given)";
    GET    "/users/{id}"                            Admin  UserGet          "users"     "Get a user";
    PUT    "/users/{id}"                            Admin  UserUpdate       "users"     "Update a user (email, display name, role, password, disabled)";
    DELETE "/users/{id}"                            Admin  UserDisable      "users"     "Disable a user: its tokens and API keys stop working";
    GET    "/users/{id}/api-keys"                   User   KeysList         "api-keys"  "List a user's API keys (admins: anyone's; users: their own)";
    POST   "/users/{id}/api-keys"                   User   KeyCreate        "api-keys"  "Mint an API key; the key is in this response only";
    PUT    "/users/{id}/api-keys/{key_id}"          User   KeyUpdate        "api-keys"  "Update an API key (name, expiry, disabled, allowed providers, rate limit)";
    DELETE "/users/{id}/api-keys/{key_id}"          User   KeyDelete        "api-keys"  "Delete an API key";
    GET    "/providers"                             Admin  ProvidersList    "providers" "List providers (config file and database) with keys in rotation and live health";
    POST   "/providers"                             Admin  ProviderCreate   "providers" "Add a provider";
    GET    "/providers/{id}"                        Admin  ProviderGet      "providers" "Get a provider";
    PUT    "/providers/{id}"                        Admin  ProviderUpdate   "providers" "Update a stored provider";
    DELETE "/providers/{id}"                        Admin  ProviderDelete   "providers" "Delete a stored provider with its keys and models";
    GET    "/providers/{id}/models"                 Admin  ProviderModels   "providers" "The provider's raw model list (cached; ?refresh=true to refetch) and stored model metadata";
    GET    "/providers/{id}/health"                 Admin  ProviderHealth   "providers" "A live, lightweight probe of the provider (its model list endpoint)";
    GET    "/providers/{id}/metrics"                Admin  ProviderMetrics  "providers" "The routing health the scheduler uses, per model";
    GET    "/providers/{id}/keys"                   Admin  ProviderKeysList "providers" "List a stored provider's keys (masked)";
    POST   "/providers/{id}/keys"                   Admin  ProviderKeyCreate "providers" "Add a key to a stored provider";
    PUT    "/providers/{id}/keys/{key_id}"          Admin  ProviderKeyUpdate "providers" "Update a provider key (secret, QPS limit, disabled)";
    DELETE "/providers/{id}/keys/{key_id}"          Admin  ProviderKeyDelete "providers" "Delete a provider key";
    GET    "/logical-models"                        Admin  LogicalList      "logical-models" "List logical models (config file and database)";
    POST   "/logical-models"                        Admin  LogicalCreate    "logical-models" "Create a logical model";
    GET    "/logical-models/{id}"                   Admin  LogicalGet       "logical-models" "Get a logical model";
    PUT    "/logical-models/{id}"                   Admin  LogicalUpdate    "logical-models" "Replace a stored logical model's description and upstreams";
    DELETE "/logical-models/{id}"                   Admin  LogicalDelete    "logical-models" "Delete a stored logical model";
    GET    "/logical-models/{id}/upstreams"         Admin  LogicalUpstreams "logical-models" "A logical model's upstreams with their live health";
    POST   "/routing/decide"                        Admin  RoutingDecide    "routing"   "Dry run: the upstream a request for this model would go to, and every candidate's score";
    GET    "/routing/sessions/{session_id}"         Admin  SessionGet       "routing"   "A session's bindings, each its client's (shared by all replicas); with ?model= (and ?client=), where its next request goes";
    DELETE "/routing/sessions/{session_id}"         Admin  SessionDelete    "routing"   "Drop a session's bindings on every replica: its next request is placed afresh";
}

/// What the router found for a request.
pub enum Resolved<'a> {
    Found(&'a RouteSpec, Vec<(String, String)>),
    /// The path exists; `allow` lists its methods (HEAD with GET).
    WrongMethod {
        allow: String,
    },
    NotFound,
}

pub struct Router {
    specs: Vec<RouteSpec>,
    /// Path → indexes into `specs` (one per method).
    paths: matchit::Router<Vec<usize>>,
}

impl Router {
    pub fn new() -> Self {
        let specs = routes();
        let mut grouped: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            match grouped.iter_mut().find(|(p, _)| *p == s.path) {
                Some((_, v)) => v.push(i),
                None => grouped.push((s.path, vec![i])),
            }
        }
        let mut paths = matchit::Router::new();
        for (path, idx) in grouped {
            // The table is static and its paths are distinct: a failure is a programming error
            // caught by the unit test below.
            paths.insert(path, idx).expect("admin route table is consistent");
        }
        Self { specs, paths }
    }

    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolved<'_> {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let Ok(m) = self.paths.at(path) else {
            return Resolved::NotFound;
        };
        let params: Vec<(String, String)> = m
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), super::http::decode_segment(v)))
            .collect();
        // No stored name holds NUL (PostgreSQL refuses it in text, where SQLite would look it up):
        // such a segment names nothing, on either.
        if params.iter().any(|(_, v)| v.contains('\0')) {
            return Resolved::NotFound;
        }
        let head_as_get = *method == Method::HEAD;
        for &i in m.value {
            let s = &self.specs[i];
            if s.method == *method || (head_as_get && s.method == Method::GET) {
                return Resolved::Found(s, params);
            }
        }
        let mut allow: Vec<&str> = m.value.iter().map(|&i| self.specs[i].method.as_str()).collect();
        if allow.contains(&"GET") {
            allow.push("HEAD");
        }
        Resolved::WrongMethod {
            allow: allow.join(", "),
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_with_params() {
        let r = Router::new();
        match r.resolve(&Method::PUT, "/users/u1/api-keys/k9") {
            Resolved::Found(s, p) => {
                assert_eq!(s.op, Op::KeyUpdate);
                assert_eq!(p, vec![("id".into(), "u1".into()), ("key_id".into(), "k9".into())]);
            }
            _ => panic!("not found"),
        }
        match r.resolve(&Method::PATCH, "/users") {
            Resolved::WrongMethod { allow } => assert_eq!(allow, "GET, POST, HEAD"),
            _ => panic!("PATCH /users must be a wrong method"),
        }
        assert!(matches!(r.resolve(&Method::GET, "/nope"), Resolved::NotFound));
        assert!(matches!(r.resolve(&Method::GET, "/providers/"), Resolved::Found(..)));
    }

    #[test]
    fn every_route_is_unique() {
        let specs = routes();
        for (i, a) in specs.iter().enumerate() {
            for b in &specs[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{} {}", a.method, a.path);
            }
        }
    }
}
