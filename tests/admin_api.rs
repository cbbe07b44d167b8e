//! The admin API over HTTP against the real binary, on SQLite and on PostgreSQL: bootstrap, tokens,
//! users, API keys (live on the proxy within a second), providers, logical models and routing.
//! Every test runs once per backend (see `both_backends!` at the end).

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(1);

async fn setup(backend: Backend) -> (Mock, Mock, Gateway) {
    let a = Mock::start("alpha", &["gpt-a", "shared"]).await;
    let b = Mock::start("beta", &["gpt-b", "shared"]).await;
    let yaml = format!(
        "providers:\n{}{}logical_models:\n  - id: file-model\n    upstreams:\n      - {{provider: alpha, model: gpt-a}}\n",
        provider_yaml("alpha", &a, ", models: [gpt-a, shared]"),
        provider_yaml("beta", &b, ", models: [gpt-b, shared]"),
    );
    let gw = Gateway::start_on(backend, &yaml, &[]).await;
    (a, b, gw)
}

async fn send(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw.admin_req(method, path).await;
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn as_token(gw: &Gateway, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw.client.request(method, gw.admin_url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn proxy_status(gw: &Gateway, key: &str, model: &str) -> (u16, Option<String>) {
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(model))
        .send()
        .await
        .unwrap();
    let provider = r
        .headers()
        .get("x-apiproxy-provider")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), provider)
}

/// Polls until the proxy answers `want` for this key, and says how long that took.
async fn until_status(gw: &Gateway, key: &str, model: &str, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        if proxy_status(gw, key, model).await.0 == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "proxy never answered {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A successful login's token pair.
async fn log_in(gw: &Gateway, username: &str, password: &str) -> Value {
    let r = gw
        .client
        .post(gw.admin_url("/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The status of listing users with `token`: whether it is a live admin access token.
async fn users_status(gw: &Gateway, token: &str) -> u16 {
    as_token(gw, token, Method::GET, "/users", None).await.0
}

/// A POST with no token, and its status and JSON answer.
async fn post_public(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let r = gw.client.post(gw.admin_url(path)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The statuses of requests sent all at once.
async fn statuses_of(
    tries: impl Iterator<Item = impl std::future::Future<Output = reqwest::Result<reqwest::Response>>>,
) -> Vec<u16> {
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect()
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

async fn racing_inits_create_one_admin(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    // Eight first-admin inits at once, each with its own name: one admin, the others refused.
    let tries = (0..8).map(|i| {
        gw.client
            .post(gw.admin_url("/system/admin/init"))
            .json(&json!({"username": format!("admin{i}")}))
            .send()
    });
    let statuses = statuses_of(tries).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
}

async fn cross_site_changes_are_refused(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let init = gw.admin_url("/system/admin/init");
    // What a web page in the operator's browser can send without asking: a form, a text/plain
    // fetch, JSON; the browser names the page's origin. None creates the first admin.
    for (headers, body) in [
        (
            [
                ("origin", "http://evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "username=mallory",
        ),
        (
            [("origin", "null"), ("content-type", "text/plain")],
            r#"{"username":"mallory"}"#,
        ),
        (
            [("sec-fetch-site", "cross-site"), ("content-type", "application/json")],
            r#"{"username":"mallory"}"#,
        ),
    ] {
        let mut r = gw.client.post(&init).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403, "{headers:?}");
    }
    // DNS rebinding: the attacker's name now points at this port, so the page is same-origin.
    let rebound = format!("rebind.example:{}", gw.admin_port);
    let r = gw
        .client
        .post(&init)
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a rebound name");
    // Nor may that page read what needs no token (the metrics name every client key); the
    // operator's own browser may, by address, or by name when the address was typed.
    let metrics = gw.admin_url("/metrics");
    let read = |host: String, site: &'static str| {
        let request = gw
            .client
            .get(&metrics)
            .header("host", host)
            .header("sec-fetch-site", site);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(read(rebound.clone(), "same-origin").await, 403, "a rebound name");
    assert_eq!(read(rebound.clone(), "none").await, 200, "typed by the operator");
    assert_eq!(read(format!("127.0.0.1:{}", gw.admin_port), "same-origin").await, 200);
    // The admin service's own origin (a page it served) may, as may a client that is no browser.
    let own = init.split("/system").next().unwrap().to_string();
    let r = gw
        .client
        .post(&init)
        .header("origin", own)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn bootstrap_login_refresh_logout(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let admin = gw.admin().await;
    assert!(admin.password.len() >= 12);
    // Init works once only.
    let r = gw
        .client
        .post(gw.admin_url("/system/admin/init"))
        .json(&json!({"username": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // Wrong password, unknown user.
    for (u, p) in [("admin", "wrong-password-123"), ("nobody", "whatever-123456")] {
        let r = gw
            .client
            .post(gw.admin_url("/auth/login"))
            .json(&json!({"username": u, "password": p}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = gw
        .client
        .post(gw.admin_url("/auth/login"))
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(field(&v), "password");

    let login = log_in(&gw, "admin", &admin.password).await;
    let access = login["access_token"].as_str().unwrap().to_string();
    let refresh = login["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(users_status(&gw, &access).await, 200);
    // A refresh token is not an access token.
    assert_eq!(users_status(&gw, &refresh).await, 401);

    // Refresh rotates: the new pair works, the old refresh token is revoked.
    let (status, pair) = post_public(&gw, "/auth/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(status, 200);
    let access2 = pair["access_token"].as_str().unwrap().to_string();
    let refresh2 = pair["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(users_status(&gw, &access2).await, 200);

    // Tampered token.
    let mut bytes = access2.clone().into_bytes();
    let i = access2.rfind('.').unwrap() + 1;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(users_status(&gw, &tampered).await, 401);

    // A second sign-in of the same user, to see that ending one leaves the other.
    let other = log_in(&gw, "admin", &admin.password).await;
    let other_access = other["access_token"].as_str().unwrap().to_string();

    // A used refresh token presented again (a thief, or a replay) is refused, and ends its whole
    // sign-in: the pair it already bought stops working too.
    let (status, _) = post_public(&gw, "/auth/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(status, 401, "a used refresh token is revoked");
    assert_eq!(users_status(&gw, &access2).await, 401);
    let (status, _) = post_public(&gw, "/auth/refresh", json!({"refresh_token": refresh2})).await;
    assert_eq!(status, 401, "the sign-in ended with the reuse");
    assert_eq!(users_status(&gw, &other_access).await, 200);

    // Logout ends the access token's sign-in: the refresh tokens it bought are revoked with it,
    // given in the body or not.
    let login = log_in(&gw, "admin", &admin.password).await;
    let (_, pair) = post_public(
        &gw,
        "/auth/refresh",
        json!({"refresh_token": login["refresh_token"].as_str().unwrap()}),
    )
    .await;
    let (access3, refresh3) = (
        pair["access_token"].as_str().unwrap(),
        pair["refresh_token"].as_str().unwrap(),
    );
    let (s, _) = as_token(&gw, access3, Method::POST, "/auth/logout", None).await;
    assert_eq!(s, 200);
    assert_eq!(users_status(&gw, access3).await, 401);
    let (status, _) = post_public(&gw, "/auth/refresh", json!({"refresh_token": refresh3})).await;
    assert_eq!(status, 401);
    // And a refresh token of another of the caller's sign-ins, given in the body.
    let extra = log_in(&gw, "admin", &admin.password).await;
    let caller = log_in(&gw, "admin", &admin.password).await;
    let (s, _) = as_token(
        &gw,
        caller["access_token"].as_str().unwrap(),
        Method::POST,
        "/auth/logout",
        Some(json!({"refresh_token": extra["refresh_token"]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(users_status(&gw, extra["access_token"].as_str().unwrap()).await, 401);

    // A refresh token alone signs out (no live access token needed).
    let login = log_in(&gw, "admin", &admin.password).await;
    let (status, v) = post_public(&gw, "/auth/revoke", json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!((status, &v["revoked"]), (200, &json!(true)));
    assert_eq!(users_status(&gw, login["access_token"].as_str().unwrap()).await, 401);
    let (status, _) = post_public(&gw, "/auth/refresh", json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(status, 401);
    let (status, _) = post_public(&gw, "/auth/revoke", json!({"refresh_token": other_access})).await;
    assert_eq!(status, 401, "an access token is not a refresh token");
    // Other sign-ins of the same user are untouched.
    assert_eq!(users_status(&gw, &other_access).await, 200);
    // A refresh token used by several requests at once gives one new pair, however they interleave.
    let login = log_in(&gw, "admin", &admin.password).await;
    let racing = login["refresh_token"].as_str().unwrap().to_string();
    let tries = (0..8).map(|_| {
        gw.client
            .post(gw.admin_url("/auth/refresh"))
            .json(&json!({"refresh_token": racing}))
            .send()
    });
    let statuses = statuses_of(tries).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 401].contains(s)), "{statuses:?}");
    // A new secret-key value is generated, not applied.
    let (s, v) = send(&gw, Method::POST, "/system/secret-key/generate", None).await;
    assert_eq!(s, 200);
    assert!(v["secret_key"].as_str().unwrap().len() >= 43);
}

async fn every_endpoint_needs_a_valid_token(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let doc: Value = gw
        .client
        .get(gw.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // The document covers the issue's endpoints.
    for p in [
        "/system/admin/init",
        "/system/secret-key/generate",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/revoke",
        "/users",
        "/users/{id}",
        "/users/{id}/api-keys",
        "/users/{id}/api-keys/{key_id}",
        "/providers",
        "/providers/{id}",
        "/providers/{id}/models",
        "/providers/{id}/health",
        "/providers/{id}/metrics",
        "/providers/{id}/keys",
        "/providers/{id}/keys/{key_id}",
        "/logical-models",
        "/logical-models/{id}",
        "/logical-models/{id}/upstreams",
        "/routing/decide",
        "/routing/sessions/{session_id}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from /openapi.json");
    }
    // Each operation lists the status it answers with on success.
    for (path, method, status) in [
        ("/users", "post", "201"),
        ("/users", "get", "200"),
        ("/users/{id}/api-keys/{key_id}", "delete", "204"),
        ("/providers/{id}", "delete", "204"),
        ("/logical-models", "post", "201"),
    ] {
        let responses = &paths[path][method]["responses"];
        assert!(responses.get(status).is_some(), "{method} {path}: {responses}");
        let others = ["200", "201", "204"].into_iter().filter(|s| *s != status);
        assert!(
            others.into_iter().all(|s| responses.get(s).is_none()),
            "{method} {path}: {responses}"
        );
    }
    let public = [
        "/health",
        "/metrics",
        "/openapi.json",
        "/system/admin/init",
        "/auth/login",
        "/auth/refresh",
        "/auth/revoke",
    ];
    let admin = gw.admin().await;
    // A user that is not an admin.
    let (s, v) = send(&gw, Method::POST, "/users", Some(json!({"username": "bob"}))).await;
    assert_eq!(s, 201);
    let bob_token = gw.login("bob", v["password"].as_str().unwrap()).await;
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "someid")
                .replace("{key_id}", "somekey")
                .replace("{session_id}", "s1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let secured = !op["security"].as_array().unwrap().is_empty();
            assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
            if !secured {
                continue;
            }
            for token in [None, Some("garbage"), Some("a.b.c")] {
                let mut r = gw.client.request(m.clone(), gw.admin_url(&concrete)).json(&json!({}));
                if let Some(t) = token {
                    r = r.bearer_auth(t);
                }
                let resp = r.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            }
            if op["x-required-role"] == "admin" {
                let (s, _) = as_token(&gw, &bob_token, m.clone(), &concrete, Some(json!({}))).await;
                assert_eq!(s, 403, "{method} {path} as a plain user");
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "checked {checked} secured operations");
    let _ = admin;
    // Unknown path and method.
    assert_eq!(send(&gw, Method::GET, "/nope", None).await.0, 404);
    let resp = gw.admin_req(Method::PATCH, "/users").await.send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.headers()["allow"],
        "GET, POST, HEAD",
        "a 405 names the path's methods"
    );
}

async fn expired_token_is_refused(backend: Backend) {
    let gw = Gateway::start_on(backend, "", &[("JWT_ACCESS_TTL_S", "1")]).await;
    let admin = gw.admin().await;
    assert_eq!(as_token(&gw, &admin.token, Method::GET, "/users", None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, v) = as_token(&gw, &admin.token, Method::GET, "/users", None).await;
    assert_eq!(s, 401, "{v}");
}

async fn users_crud_and_disable(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let admin = gw.admin().await;
    // 400s name the field.
    for (body, want) in [
        (json!({"username": "has space"}), "username"),
        (json!({"username": "carol", "role": "root"}), "role"),
        (json!({"username": "carol", "password": "short"}), "password"),
        (json!({"username": "carol", "password": "x".repeat(1025)}), "password"),
        (json!({"username": "carol", "email": "a".repeat(255)}), "email"),
        (
            json!({"username": "carol", "display_name": "Carol\u{202e}nimda"}),
            "display_name",
        ),
        (json!({"username": "carol", "bogus": 1}), "bogus"),
        (json!({}), "username"),
    ] {
        let (s, v) = send(&gw, Method::POST, "/users", Some(body.clone())).await;
        assert_eq!((s, field(&v)), (400, want), "{body} -> {v}");
    }
    let (s, v) = send(
        &gw,
        Method::POST,
        "/users",
        Some(json!({"username": "carol", "password": "carol-password-1", "email": "c@example.com"})),
    )
    .await;
    assert_eq!(s, 201);
    assert!(v.get("password").is_none(), "a chosen password is not echoed");
    assert!(v.to_string().find("argon2").is_none(), "no hash in answers");
    let carol = v["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        send(&gw, Method::POST, "/users", Some(json!({"username": "carol"})))
            .await
            .0,
        409
    );
    let (s, v) = send(&gw, Method::GET, "/users", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["users"].as_array().unwrap().len(), 2);
    let (s, v) = send(&gw, Method::GET, &format!("/users/{carol}"), None).await;
    assert_eq!((s, v["email"].as_str()), (200, Some("c@example.com")));
    assert_eq!(send(&gw, Method::GET, "/users/missing", None).await.0, 404);
    let (s, v) = send(
        &gw,
        Method::PUT,
        &format!("/users/{carol}"),
        Some(json!({"display_name": "Carol", "email": null})),
    )
    .await;
    assert_eq!(
        (s, &v["display_name"], &v["email"]),
        (200, &json!("Carol"), &Value::Null)
    );
    // Carol's token works until she is disabled; then tokens and login stop.
    let carol_token = gw.login("carol", "carol-password-1").await;
    let path = format!("/users/{carol}/api-keys");
    assert_eq!(as_token(&gw, &carol_token, Method::GET, &path, None).await.0, 200);
    let (s, v) = send(&gw, Method::DELETE, &format!("/users/{carol}"), None).await;
    assert_eq!((s, &v["disabled"]), (200, &json!(true)));
    assert_eq!(as_token(&gw, &carol_token, Method::GET, &path, None).await.0, 401);
    let r = gw
        .client
        .post(gw.admin_url("/auth/login"))
        .json(&json!({"username": "carol", "password": "carol-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An admin cannot lock themself out.
    let (s, v) = send(&gw, Method::DELETE, &format!("/users/{}", admin.user_id), None).await;
    assert_eq!((s, field(&v)), (400, "disabled"));
}

async fn api_keys_are_live_within_a_second(backend: Backend) {
    let (a, _b, gw) = setup(backend).await;
    let admin = gw.admin().await;
    let (_, v) = send(&gw, Method::POST, "/users", Some(json!({"username": "dave"}))).await;
    let dave = v["user"]["id"].as_str().unwrap().to_string();
    let dave_token = gw.login("dave", v["password"].as_str().unwrap()).await;
    let keys = format!("/users/{dave}/api-keys");

    for (body, want) in [
        (json!({"name": "k", "expires": "decade"}), "expires"),
        (json!({"name": ""}), "name"),
        (json!({"name": "ci\nINFO request forged=1"}), "name"),
        (json!({"name": "k", "rate_limit_rps": 0}), "rate_limit_rps"),
        (
            json!({"name": "k", "allowed_providers": ["alpha", "ghost"]}),
            "allowed_providers[1]",
        ),
    ] {
        let (s, v) = send(&gw, Method::POST, &keys, Some(body.clone())).await;
        assert_eq!((s, field(&v)), (400, want), "{body} -> {v}");
    }

    // Dave mints his own key; it works on the proxy at once.
    let (s, v) = as_token(
        &gw,
        &dave_token,
        Method::POST,
        &keys,
        Some(json!({"name": "app", "expires": "month"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let key_id = v["id"].as_str().unwrap().to_string();
    assert!(key.len() >= 47 && key.starts_with(v["prefix"].as_str().unwrap()));
    assert!(v["expires_at"].as_i64().unwrap() > 0);
    let took = until_status(&gw, &key, "gpt-a", 200).await;
    assert!(took < DEADLINE, "minted key worked after {took:?}");
    assert_eq!(a.hits(), 1);

    // Listing never shows the key again.
    let (s, v) = as_token(&gw, &dave_token, Method::GET, &keys, None).await;
    assert_eq!(s, 200);
    assert!(!v.to_string().contains(&key));
    assert_eq!(v["api_keys"][0]["prefix"].as_str().unwrap().len(), 12);

    // Another user cannot see or touch Dave's keys; Dave cannot see the admin's.
    let (_, v) = send(&gw, Method::POST, "/users", Some(json!({"username": "eve"}))).await;
    let eve_token = gw.login("eve", v["password"].as_str().unwrap()).await;
    for (m, p) in [
        (Method::GET, keys.clone()),
        (Method::POST, keys.clone()),
        (Method::PUT, format!("{keys}/{key_id}")),
        (Method::DELETE, format!("{keys}/{key_id}")),
    ] {
        let (s, v) = as_token(&gw, &eve_token, m.clone(), &p, Some(json!({"name": "x"}))).await;
        assert_eq!(s, 404, "{m} {p}: {v}");
    }
    let admin_keys = format!("/users/{}/api-keys", admin.user_id);
    assert_eq!(as_token(&gw, &dave_token, Method::GET, &admin_keys, None).await.0, 404);

    // Disabled: refused within a second; enabled again: accepted.
    let (s, v) = send(
        &gw,
        Method::PUT,
        &format!("{keys}/{key_id}"),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!((s, &v["disabled"]), (200, &json!(true)));
    let took = until_status(&gw, &key, "gpt-a", 401).await;
    assert!(took < DEADLINE, "disabled key stopped after {took:?}");
    send(
        &gw,
        Method::PUT,
        &format!("{keys}/{key_id}"),
        Some(json!({"disabled": false})),
    )
    .await;
    until_status(&gw, &key, "gpt-a", 200).await;

    // Disabling the user stops the user's keys too.
    send(&gw, Method::DELETE, &format!("/users/{dave}"), None).await;
    let took = until_status(&gw, &key, "gpt-a", 401).await;
    assert!(took < DEADLINE, "key of a disabled user stopped after {took:?}");
    send(
        &gw,
        Method::PUT,
        &format!("/users/{dave}"),
        Some(json!({"disabled": false})),
    )
    .await;
    until_status(&gw, &key, "gpt-a", 200).await;

    // Deleted: refused within a second.
    let (s, _) = send(&gw, Method::DELETE, &format!("{keys}/{key_id}"), None).await;
    assert_eq!(s, 204);
    let took = until_status(&gw, &key, "gpt-a", 401).await;
    assert!(took < DEADLINE, "deleted key stopped after {took:?}");
    assert_eq!(
        send(&gw, Method::DELETE, &format!("{keys}/{key_id}"), None).await.0,
        404
    );
}

async fn key_limits_rate_and_providers(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let admin = gw.admin().await;
    let keys = format!("/users/{}/api-keys", admin.user_id);
    let (_, v) = send(
        &gw,
        Method::POST,
        &keys,
        Some(json!({"name": "slow", "rate_limit_rps": 1})),
    )
    .await;
    let slow = v["key"].as_str().unwrap().to_string();
    assert_eq!(proxy_status(&gw, &slow, "gpt-a").await.0, 200);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&slow)
        .json(&chat_body("gpt-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(proxy_status(&gw, &slow, "gpt-a").await.0, 200);

    // Limited to alpha: "shared" (alpha and beta) only ever reaches alpha; beta-only models are 403.
    let (_, v) = send(
        &gw,
        Method::POST,
        &keys,
        Some(json!({"name": "a-only", "allowed_providers": ["alpha"]})),
    )
    .await;
    let a_only = v["key"].as_str().unwrap().to_string();
    for _ in 0..8 {
        assert_eq!(proxy_status(&gw, &a_only, "shared").await, (200, Some("alpha".into())));
    }
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&a_only)
        .json(&chat_body("gpt-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_not_allowed");
    assert_eq!(proxy_status(&gw, &a_only, "beta/gpt-b").await.0, 403);
    // Its model list shows what it may call and nothing else; an unlimited key sees everything.
    let ids = gw.model_ids("/v1/models", &a_only).await;
    for id in ["gpt-a", "shared", "file-model"] {
        assert!(ids.iter().any(|m| m == id), "{id} missing from {ids:?}");
    }
    assert!(!ids.iter().any(|m| m == "gpt-b"), "{ids:?}");
    assert!(gw
        .model_ids("/v1/models", CLIENT_KEY)
        .await
        .iter()
        .any(|m| m == "gpt-b"));
}

async fn a_user_s_key_limits_bind_every_key_the_user_makes(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    // The admin limits a user's keys to alpha at 1 request/s.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/users",
        Some(
            json!({"username": "carol", "password": "carol-password-1", "key_allowed_providers": ["alpha"],
                    "key_rate_limit_rps": 1}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["user"]["key_allowed_providers"], json!(["alpha"]), "{v}");
    let user = v["user"]["id"].as_str().unwrap().to_string();
    let token = gw.login("carol", "carol-password-1").await;
    let keys = format!("/users/{user}/api-keys");
    // Carol makes a key with no limits of its own, and one that asks for beta and 100/s: both stay
    // within her limits.
    let mut minted = Vec::new();
    for body in [
        json!({"name": "free"}),
        json!({"name": "wide", "allowed_providers": ["alpha", "beta"], "rate_limit_rps": 100}),
    ] {
        let (s, v) = as_token(&gw, &token, Method::POST, &keys, Some(body)).await;
        assert_eq!(s, 201, "{v}");
        // Its answer says what is enforced: hers, within its own.
        assert_eq!(
            v["effective"],
            json!({"allowed_providers": ["alpha"], "rate_limit_rps": 1}),
            "{v}"
        );
        minted.push((
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        ));
    }
    for (_, key) in &minted {
        until_status(&gw, key, "gpt-a", 200).await;
        assert_eq!(
            proxy_status(&gw, key, "gpt-b").await.0,
            403,
            "beta is not hers to reach"
        );
        assert_eq!(proxy_status(&gw, key, "gpt-a").await.0, 429, "1 request/s");
    }
    // Her 1 request/s is hers, whichever key: a second key buys no second request.
    until_status(&gw, &minted[0].1, "gpt-a", 200).await;
    assert_eq!(
        proxy_status(&gw, &minted[1].1, "gpt-a").await.0,
        429,
        "shared by her keys"
    );
    // Lifting a key's own limits does not lift hers.
    let (id, key) = &minted[1];
    let (s, v) = as_token(
        &gw,
        &token,
        Method::PUT,
        &format!("{keys}/{id}"),
        Some(json!({"allowed_providers": null, "rate_limit_rps": null})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(proxy_status(&gw, key, "gpt-b").await.0, 403);
    // Nor may she change her own user (admins only).
    let (s, _) = as_token(
        &gw,
        &token,
        Method::PUT,
        &format!("/users/{user}"),
        Some(json!({"key_allowed_providers": null})),
    )
    .await;
    assert_eq!(s, 403);
    // The admin lifts the limits: her keys reach beta (the snapshot is refreshed).
    let (s, v) = send(
        &gw,
        Method::PUT,
        &format!("/users/{user}"),
        Some(json!({"key_allowed_providers": null, "key_rate_limit_rps": null})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["key_allowed_providers"], Value::Null, "{v}");
    until_status(&gw, key, "gpt-b", 200).await;
    // The first key is still its own: no limits of its own, none of hers.
    assert_eq!(proxy_status(&gw, &minted[0].1, "gpt-b").await.0, 200);
    // A list naming a provider that does not exist is refused, by its field.
    let (s, v) = send(
        &gw,
        Method::PUT,
        &format!("/users/{user}"),
        Some(json!({"key_allowed_providers": ["ghost"]})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("key_allowed_providers[0]"), "{v}");

    // A key the admin stopped stays stopped: she may narrow her keys, never undo a stop.
    let free = format!("{keys}/{}", minted[0].0);
    let wide = format!("{keys}/{}", minted[1].0);
    assert_eq!(
        send(&gw, Method::PUT, &free, Some(json!({"disabled": true}))).await.0,
        200
    );
    let (s, v) = as_token(&gw, &token, Method::PUT, &free, Some(json!({"disabled": false}))).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = as_token(&gw, &token, Method::PUT, &wide, Some(json!({"expires": "week"}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = as_token(&gw, &token, Method::PUT, &wide, Some(json!({"expires": "never"}))).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = as_token(&gw, &token, Method::PUT, &wide, Some(json!({"disabled": true}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        send(&gw, Method::PUT, &free, Some(json!({"disabled": false}))).await.0,
        200
    );
    until_status(&gw, &minted[0].1, "gpt-b", 200).await;
}

/// Each change rebuilds the snapshot on every replica: a user who is not an admin makes at most 5 a
/// second and has at most 200 keys.
async fn a_user_s_changes_and_keys_are_bounded(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let (s, v) = send(
        &gw,
        Method::POST,
        "/users",
        Some(json!({"username": "dave", "password": "dave-password-1"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let user = v["user"]["id"].as_str().unwrap().to_string();
    let keys = format!("/users/{user}/api-keys");
    let token = gw.login("dave", "dave-password-1").await;
    let mint_as = |token: String, n: usize| {
        let req = gw
            .client
            .post(gw.admin_url(&keys))
            .bearer_auth(token)
            .json(&json!({"name": format!("k{n}")}));
        async move { req.send().await.unwrap() }
    };
    let answers = futures_util::future::join_all((0..10).map(|n| mint_as(token.clone(), n))).await;
    let limited: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert!(
        !limited.is_empty() && limited.len() <= 5,
        "{:?}",
        answers.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    assert_eq!(limited[0].headers()["retry-after"], "1");
    assert!(answers.iter().all(|r| [201, 429].contains(&r.status().as_u16())));
    // An admin is not held to it: the rest of the 200 keys, then no more.
    let admin = gw.admin().await.token;
    let have = answers.iter().filter(|r| r.status() == 201).count();
    for n in have..195 {
        assert_eq!(mint_as(admin.clone(), n).await.status(), 201, "key {n}");
    }
    // Ten creates at once for the last five places: five get them (the count and the insert share
    // a transaction that locks the user), not ten.
    let last = futures_util::future::join_all((195..205).map(|n| mint_as(admin.clone(), n))).await;
    let statuses: Vec<u16> = last.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
    let (_, listed) = send(&gw, Method::GET, &keys, None).await;
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 200);
    let r = mint_as(admin.clone(), 200).await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 200"), "{v}");
}

/// A provider that authenticates with a header of its own keeps the secret there: it is never shown,
/// and settings read, edited and written back keep it.
async fn a_header_secret_is_never_shown(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let h = Mock::start("hdr", &["gpt-h"]).await;
    let secret = "azure-secret-0123456789";
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "hdr", "base_url": h.url(), "headers": {"api-key": secret, "x-team": "ml"},
                    "models": [{"model": "gpt-h"}]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(secret), "{v}");
    let (_, v) = send(&gw, Method::GET, "/providers/hdr", None).await;
    let shown = v["settings"]["headers"].clone();
    assert_eq!(shown, json!({"api-key": "…6789", "x-team": "…"}), "{v}");
    let (_, list) = send(&gw, Method::GET, "/providers", None).await;
    assert!(!list.to_string().contains(secret));
    // Written back as shown, with one value changed: the secret stays, the change lands.
    let mut edited = shown.clone();
    edited["x-team"] = json!("research");
    let (s, v) = send(&gw, Method::PUT, "/providers/hdr", Some(json!({"headers": edited}))).await;
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains(secret), "{v}");
    until("the edit on the proxy", DEADLINE, async || {
        assert_eq!(proxy_status(&gw, CLIENT_KEY, "hdr/gpt-h").await.0, 200);
        h.last().unwrap().header("x-team") == Some("research")
    })
    .await;
    assert_eq!(h.last().unwrap().header("api-key"), Some(secret));
}

/// Text the database cannot keep is a 400 on every backend; ids are read as the client wrote them.
async fn odd_text_is_refused_or_read_as_meant(backend: Backend) {
    let (a, _b, gw) = setup(backend).await;
    gw.admin().await;
    let r = gw
        .client
        .post(gw.admin_url("/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"\u0000","password":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "PostgreSQL refuses NUL in text");
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "nul\u{0}", "base_url": a.url()})),
    )
    .await;
    assert_eq!((s, field(&v)), (400, "body"), "{v}");

    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "café", "base_url": a.url()})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = send(&gw, Method::GET, "/providers/caf%C3%A9", None).await;
    assert_eq!((s, &v["id"]), (200, &json!("café")), "{v}");
    assert_eq!(send(&gw, Method::DELETE, "/providers/caf%C3%A9", None).await.0, 204);
    // A session named as a response's pin is no session: it would move that response's
    // continuations. (Sent first: the binding below, once there, shows this one would be too.)
    let r = gw
        .post(
            "/v1/chat/completions",
            chat_body("gpt-a"),
            &[("x-session-id", "response:resp_1")],
        )
        .await;
    assert_eq!(r.status(), 200);
    // A session id with a space and a slash, as a client may send it.
    let sid = "conv 1/a";
    let r = gw
        .post("/v1/chat/completions", chat_body("gpt-a"), &[("x-session-id", sid)])
        .await;
    assert_eq!(r.status(), 200);
    until(&format!("the binding of `{sid}`"), DEADLINE, async || {
        send(&gw, Method::GET, "/routing/sessions/conv%201%2Fa", None).await.0 == 200
    })
    .await;
    assert_eq!(
        send(&gw, Method::GET, "/routing/sessions/response%3Aresp_1", None)
            .await
            .0,
        404
    );
    // NUL in a path segment names nothing, on PostgreSQL (which refuses it in text) as on SQLite.
    let admin = gw.admin().await;
    for (method, path) in [
        (Method::GET, "/users/%00".to_string()),
        (Method::GET, "/providers/a%00".to_string()),
        (Method::PUT, format!("/users/{}/api-keys/%00", admin.user_id)),
    ] {
        let (s, v) = send(&gw, method, &path, Some(json!({"name": "x"}))).await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    // A session id longer than the gateway keeps is found by the same long id it was sent with.
    let long = "s".repeat(300);
    let r = gw
        .post("/v1/chat/completions", chat_body("gpt-a"), &[("x-session-id", &long)])
        .await;
    assert_eq!(r.status(), 200);
    until("the binding of a long session id", DEADLINE, async || {
        send(&gw, Method::GET, &format!("/routing/sessions/{long}"), None)
            .await
            .0
            == 200
    })
    .await;
    let (s, v) = send(&gw, Method::DELETE, &format!("/routing/sessions/{long}"), None).await;
    assert_eq!((s, &v["deleted"]), (200, &json!(true)), "{v}");
}

async fn a_provider_key_at_its_rate_limit_is_a_rate_limit(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let d = Mock::start("delta", &["gpt-d"]).await;
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "delta", "base_url": d.url(), "api_keys": [{"key": "sk-delta-0123456789", "qps_limit": 1}],
                    "models": [{"model": "gpt-d"}]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    until_status(&gw, CLIENT_KEY, "gpt-d", 200).await;
    // Its one key has spent its budget for this second: the client is told to come back (429,
    // Retry-After), as for an upstream's own rate limit, not handed a bad gateway.
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&chat_body("gpt-d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(after, 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(
        v["error"]["attempts"][0]["error"], "every API key at its rate limit",
        "{v}"
    );
    assert_eq!(d.hits(), 1, "nothing sent over the limit");
    // The request's metrics are written by the logging hook, after the answer reached the client.
    let skipped = async || {
        let m = gw.metrics().await;
        metric(
            &m,
            "apiproxy_upstream_attempts_total",
            &[("provider", "delta"), ("outcome", "skipped")],
        ) == 1.0
    };
    until("the skipped attempt counted", Duration::from_secs(2), skipped).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        proxy_status(&gw, CLIENT_KEY, "gpt-d").await,
        (200, Some("delta".into()))
    );
}

async fn providers_crud_and_live_routing(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    let c = Mock::start("gamma", &["gpt-c", "raw-listed"]).await;
    let secret = "sk-gamma-db-secret-0123456789";
    for (body, want) in [
        (json!({"id": "bad/id", "base_url": c.url()}), "id"),
        (json!({"id": "gamma", "base_url": "ftp://x"}), "base_url"),
        (json!({"id": "gamma", "base_url": c.url(), "weight": -1}), "weight"),
        (
            json!({"id": "gamma", "base_url": c.url(), "api_style": "soap"}),
            "api_style",
        ),
        (
            json!({"id": "gamma", "base_url": c.url(), "api_keys": [{"key": ""}]}),
            "api_keys[0].key",
        ),
        (
            json!({"id": "gamma", "base_url": c.url(), "paths": {"chat": "v1"}}),
            "paths.chat",
        ),
    ] {
        let (s, v) = send(&gw, Method::POST, "/providers", Some(body.clone())).await;
        assert_eq!((s, field(&v)), (400, want), "{body} -> {v}");
    }
    let (s, _) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "alpha", "base_url": c.url()})),
    )
    .await;
    assert_eq!(s, 409, "config provider ids are taken");

    let reloads_before = metric(
        &gw.metrics().await,
        "apiproxy_config_reloads_total",
        &[("result", "applied")],
    );
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({
            "id": "gamma", "base_url": c.url(), "weight": 2.0,
            "api_keys": [{"key": secret, "qps_limit": 100}],
            "models": [{"model": "gpt-c", "alias": "gamma-fast", "metadata": {"context": 128000}},
                       {"model": "hidden-one", "disabled": true}],
        })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(secret));
    assert_eq!(v["keys"][0]["hint"], "sk-…6789");
    assert_eq!(v["active"], true);
    let reloads = metric(
        &gw.metrics().await,
        "apiproxy_config_reloads_total",
        &[("result", "applied")],
    );
    assert!(
        reloads > reloads_before,
        "the write swapped the snapshot: {reloads_before} -> {reloads}"
    );
    assert_eq!(
        send(
            &gw,
            Method::POST,
            "/providers",
            Some(json!({"id": "gamma", "base_url": c.url()}))
        )
        .await
        .0,
        409
    );

    // Live on the proxy: by provider prefix, zero-config and alias; with the decrypted key.
    for model in ["gamma/gpt-c", "gpt-c", "gamma-fast"] {
        let (s, p) = proxy_status(&gw, CLIENT_KEY, model).await;
        assert_eq!((s, p.as_deref()), (200, Some("gamma")), "{model}");
    }
    let sent = c.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    assert_eq!(sent[2].json()["model"], "gpt-c", "the alias is rewritten to the model");

    // Listing: both sources, live health, no secret.
    let (s, v) = send(&gw, Method::GET, "/providers", None).await;
    assert_eq!(s, 200);
    let list = v["providers"].as_array().unwrap();
    let by_id = |id: &str| list.iter().find(|p| p["id"] == id).cloned().unwrap();
    assert_eq!(by_id("alpha")["source"], "config");
    assert_eq!(by_id("gamma")["source"], "database");
    assert_eq!(by_id("gamma")["keys_in_rotation"], 1);
    assert!(by_id("gamma")["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["model"] == "gpt-c"));
    assert!(!v.to_string().contains(secret));
    let (s, v) = send(&gw, Method::GET, "/providers/gamma", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["stored_models"].as_array().unwrap().len(), 2);
    assert!(!v.to_string().contains(secret));
    assert_eq!(send(&gw, Method::GET, "/providers/none", None).await.0, 404);

    // Models (raw, cached), live probe, routing metrics.
    let (s, v) = send(&gw, Method::GET, "/providers/gamma/models", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["raw"]["data"][1]["id"], "raw-listed");
    assert_eq!(v["stored_models"][0]["metadata"]["context"], 128000);
    // Cached, but not past a change of the provider: moved to another server, it lists that one's.
    let d = Mock::start("delta", &["delta-only"]).await;
    // Moved to another host without its key given anew: refused, the stored key never goes there.
    let (s, v) = send(&gw, Method::PUT, "/providers/gamma", Some(json!({"base_url": d.url()}))).await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("api_keys"), "{v}");
    // Its model list is still asked of where it is (the move did not land): nothing reaches d.
    let (s, v) = send(&gw, Method::GET, "/providers/gamma/models", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["raw"].to_string().contains("raw-listed"), "{v}");
    assert!(d.all_requests().is_empty(), "nothing was sent to the other host");
    for (url, listed, gone) in [
        (d.url(), "delta-only", "raw-listed"),
        (c.url(), "raw-listed", "delta-only"),
    ] {
        let moved = json!({"base_url": url, "api_keys": [{"key": secret, "qps_limit": 100}]});
        let (s, _) = send(&gw, Method::PUT, "/providers/gamma", Some(moved)).await;
        assert_eq!(s, 200);
        let (s, v) = send(&gw, Method::GET, "/providers/gamma/models", None).await;
        assert_eq!(s, 200, "{v}");
        let raw = v["raw"].to_string();
        assert!(raw.contains(listed) && !raw.contains(gone), "{raw}");
    }
    let (s, v) = send(&gw, Method::GET, "/providers/gamma/health", None).await;
    assert_eq!((s, &v["status"]), (200, &json!("up")), "{v}");
    // Moved, gamma is judged afresh: its latency is that of an answer from where it is now.
    assert_eq!(proxy_status(&gw, CLIENT_KEY, "gpt-c").await.0, 200);
    let (s, v) = send(&gw, Method::GET, "/providers/gamma/metrics", None).await;
    assert_eq!(s, 200);
    assert!(v["upstreams"][0]["health"]["latency_ewma_ms"].is_number(), "{v}");

    // Provider keys: add, update, list masked, delete.
    let k2 = "sk-gamma-second-key-abcdefgh";
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers/gamma/keys",
        Some(json!({"key": k2, "qps_limit": 5})),
    )
    .await;
    assert_eq!(s, 201);
    let k2_id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["qps_limit"], 5);
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers/gamma/keys",
        Some(json!({"key": k2, "qps_limit": 0})),
    )
    .await;
    assert_eq!((s, field(&v)), (400, "qps_limit"));
    let (s, v) = send(
        &gw,
        Method::PUT,
        &format!("/providers/gamma/keys/{k2_id}"),
        Some(json!({"qps_limit": null, "disabled": true})),
    )
    .await;
    assert_eq!((s, &v["disabled"], &v["qps_limit"]), (200, &json!(true), &Value::Null));
    let (s, v) = send(&gw, Method::GET, "/providers/gamma/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    assert!(!v.to_string().contains(k2) && !v.to_string().contains(secret));
    assert_eq!(
        send(&gw, Method::DELETE, &format!("/providers/gamma/keys/{k2_id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(&gw, Method::DELETE, &format!("/providers/gamma/keys/{k2_id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(send(&gw, Method::GET, "/providers/alpha/keys", None).await.0, 409);

    // Update: weight and models; the config provider is read-only here.
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/providers/gamma",
        Some(json!({"weight": 3.5, "models": [{"model": "gpt-c"}, {"model": "gpt-c2"}]})),
    )
    .await;
    assert_eq!((s, &v["weight"]), (200, &json!(3.5)), "{v}");
    assert_eq!(proxy_status(&gw, CLIENT_KEY, "gpt-c2").await.0, 200);
    assert_eq!(
        proxy_status(&gw, CLIENT_KEY, "gamma-fast").await.0,
        404,
        "alias removed"
    );
    let (s, v) = send(&gw, Method::PUT, "/providers/gamma", Some(json!({"base_url": "nope"}))).await;
    assert_eq!((s, field(&v)), (400, "base_url"));
    // Part of a nested setting changes that part: the rest keeps its value.
    let set = json!({"timeouts": {"connect_ms": 4000, "first_byte_ms": 90000},
                     "paths": {"chat": "/api/chat", "models": "/api/models"}});
    assert_eq!(send(&gw, Method::PUT, "/providers/gamma", Some(set)).await.0, 200);
    let part = json!({"timeouts": {"idle_ms": 300000}, "paths": {"models": null}});
    let (s, v) = send(&gw, Method::PUT, "/providers/gamma", Some(part)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["settings"]["timeouts"],
        json!({"connect_ms": 4000, "first_byte_ms": 90000, "idle_ms": 300000}),
        "{v}"
    );
    assert_eq!(v["settings"]["paths"]["chat"], "/api/chat", "{v}");
    assert!(
        v["settings"]["paths"]["models"].is_null(),
        "null removes an override: {v}"
    );
    let back = json!({"paths": {"chat": null}});
    assert_eq!(send(&gw, Method::PUT, "/providers/gamma", Some(back)).await.0, 200);
    assert_eq!(
        send(&gw, Method::PUT, "/providers/alpha", Some(json!({"weight": 2})))
            .await
            .0,
        409
    );
    assert_eq!(send(&gw, Method::DELETE, "/providers/alpha", None).await.0, 409);

    // A provider a logical model still names is not deleted out from under it (the model would be
    // left with a dead upstream that a later provider of the same id would quietly fill).
    let lm = json!({"id": "uses-gamma", "upstreams": [{"provider": "gamma", "model": "gpt-c"}]});
    assert_eq!(send(&gw, Method::POST, "/logical-models", Some(lm)).await.0, 201);
    let (s, v) = send(&gw, Method::DELETE, "/providers/gamma", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v.to_string().contains("uses-gamma"), "{v}");
    assert_eq!(
        send(&gw, Method::DELETE, "/logical-models/uses-gamma", None).await.0,
        204
    );

    // Delete: gone from the proxy within a second.
    assert_eq!(send(&gw, Method::DELETE, "/providers/gamma", None).await.0, 204);
    let took = until_status(&gw, CLIENT_KEY, "gamma/gpt-c", 404).await;
    assert!(took < DEADLINE, "deleted provider still routed after {took:?}");
    assert_eq!(send(&gw, Method::GET, "/providers/gamma", None).await.0, 404);
    // Nor does its state linger in the upstream gauges (a dashboard would show it healthy); its
    // counters keep what it did.
    let m = gw.metrics().await;
    let gauges = [
        "latency_ewma_seconds",
        "error_rate",
        "circuit_open",
        "cooldown_seconds",
        "weight",
    ];
    let lingering: Vec<&str> = m
        .lines()
        .filter(|l| {
            gauges
                .iter()
                .any(|g| l.starts_with(&format!("apiproxy_upstream_{g}{{")))
        })
        .filter(|l| l.contains("provider=\"gamma\""))
        .collect();
    assert!(lingering.is_empty(), "{lingering:?}");
    assert!(
        m.contains("apiproxy_upstream_weight{model=\"gpt-a\",provider=\"alpha\"}"),
        "{m}"
    );
}

async fn logical_models_and_routing(backend: Backend) {
    let (_a, _b, gw) = setup(backend).await;
    for (body, want) in [
        (json!({"id": "lm", "upstreams": []}), "upstreams"),
        (
            json!({"id": "lm", "upstreams": [{"provider": "ghost", "model": "x"}]}),
            "upstreams[0].provider",
        ),
        (
            json!({"id": "lm", "upstreams": [{"provider": "alpha", "model": "x", "weight": 0}]}),
            "upstreams[0].weight",
        ),
        (json!({"id": "lm"}), "upstreams"),
        // One provider and model named twice would share one health entry (twice the weight,
        // asked again as "the other" after failing).
        (
            json!({"id": "lm", "upstreams": [{"provider": "alpha", "model": "x"}, {"provider": "beta", "model": "x"},
                {"provider": "alpha", "model": "x", "priority": 1}]}),
            "upstreams[2]",
        ),
    ] {
        let (s, v) = send(&gw, Method::POST, "/logical-models", Some(body.clone())).await;
        assert_eq!((s, field(&v)), (400, want), "{body} -> {v}");
    }
    let (s, _) = send(
        &gw,
        Method::POST,
        "/logical-models",
        Some(json!({"id": "file-model", "upstreams": [{"provider": "alpha", "model": "gpt-a"}]})),
    )
    .await;
    assert_eq!(s, 409);
    let (s, v) = send(
        &gw,
        Method::POST,
        "/logical-models",
        Some(json!({"id": "smart", "description": "two tiers", "upstreams": [
            {"provider": "beta", "model": "gpt-b", "weight": 1},
            {"provider": "alpha", "model": "gpt-a", "priority": 1}]})),
    )
    .await;
    assert_eq!((s, &v["active"]), (201, &json!(true)), "{v}");
    assert_eq!(proxy_status(&gw, CLIENT_KEY, "smart").await, (200, Some("beta".into())));

    let (s, v) = send(&gw, Method::GET, "/logical-models", None).await;
    assert_eq!(s, 200);
    let sources: Vec<(String, String)> = v["logical_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().into(), m["source"].as_str().unwrap().into()))
        .collect();
    assert!(sources.contains(&("file-model".into(), "config".into())));
    assert!(sources.contains(&("smart".into(), "database".into())));
    let (s, v) = send(&gw, Method::GET, "/logical-models/smart", None).await;
    assert_eq!((s, &v["description"]), (200, &json!("two tiers")));
    assert_eq!(send(&gw, Method::GET, "/logical-models/file-model", None).await.0, 200);
    assert_eq!(send(&gw, Method::GET, "/logical-models/none", None).await.0, 404);
    let (s, v) = send(&gw, Method::GET, "/logical-models/smart/upstreams", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["upstreams"][0]["provider"], "beta");
    assert!(v["upstreams"][0]["health"]["circuit"].is_string());

    // Dry run: tier 0 (beta) is chosen; every candidate is scored.
    let (s, v) = send(&gw, Method::POST, "/routing/decide", Some(json!({"model": "smart"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["chosen"]["provider"], "beta");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    assert!(v["candidates"][0]["effective_weight"].as_f64().unwrap() > 0.0);
    let (s, v) = send(
        &gw,
        Method::POST,
        "/routing/decide",
        Some(json!({"model": "smart", "allowed_providers": ["alpha"]})),
    )
    .await;
    assert_eq!((s, &v["chosen"]["provider"]), (200, &json!("alpha")));
    assert_eq!(
        send(&gw, Method::POST, "/routing/decide", Some(json!({"model": "nope"})))
            .await
            .0,
        404
    );
    let (s, v) = send(&gw, Method::POST, "/routing/decide", Some(json!({}))).await;
    assert_eq!((s, field(&v)), (400, "model"));

    // Sessions: the hash's pick matches the proxy's; the binding is recorded, shown and dropped.
    let (s, v) = send(&gw, Method::GET, "/routing/sessions/sess-1?model=shared", None).await;
    assert_eq!((s, &v["binding"]), (200, &json!("rendezvous_hash")), "{v}");
    let bound = v["upstream"]["provider"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let r = gw
            .post(
                "/v1/chat/completions",
                chat_body("shared"),
                &[("x-session-id", "sess-1")],
            )
            .await;
        assert_eq!(r.headers()["x-apiproxy-provider"].to_str().unwrap(), bound);
    }
    // The binding is written after the answer, in the background.
    let t0 = Instant::now();
    let v = loop {
        let (s, v) = send(&gw, Method::GET, "/routing/sessions/sess-1", None).await;
        if s == 200 {
            break v;
        }
        assert!(t0.elapsed() < DEADLINE, "binding never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v["bindings"][0]["model"], "shared");
    assert_eq!(v["bindings"][0]["upstream"]["provider"], json!(bound));
    let (_, v) = send(&gw, Method::GET, "/routing/sessions/sess-1?model=shared", None).await;
    assert_eq!(v["binding"], "stored");
    let (s, v) = send(&gw, Method::DELETE, "/routing/sessions/sess-1", None).await;
    assert_eq!((s, &v["deleted"]), (200, &json!(true)));
    let (s, _) = send(&gw, Method::GET, "/routing/sessions/sess-1", None).await;
    assert_eq!(s, 404, "no binding left");
    let (s, v) = send(&gw, Method::DELETE, "/routing/sessions/sess-1", None).await;
    assert_eq!((s, &v["deleted"]), (200, &json!(false)));

    // Update and delete; the config file's model is read-only here.
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/logical-models/smart",
        Some(json!({"upstreams": [{"provider": "alpha", "model": "gpt-a"}]})),
    )
    .await;
    assert_eq!((s, &v["description"]), (200, &json!("two tiers")));
    assert_eq!(
        proxy_status(&gw, CLIENT_KEY, "smart").await,
        (200, Some("alpha".into()))
    );
    // An explicit null clears the description.
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/logical-models/smart",
        Some(json!({"description": null, "upstreams": [{"provider": "alpha", "model": "gpt-a"}]})),
    )
    .await;
    assert_eq!((s, &v["description"]), (200, &Value::Null));
    assert_eq!(
        send(
            &gw,
            Method::PUT,
            "/logical-models/file-model",
            Some(json!({"upstreams": []}))
        )
        .await
        .0,
        409
    );
    assert_eq!(send(&gw, Method::DELETE, "/logical-models/smart", None).await.0, 204);
    let took = until_status(&gw, CLIENT_KEY, "smart", 404).await;
    assert!(took < DEADLINE);
}

async fn secrets_never_leak(backend: Backend) {
    let (a, _b, gw) = setup(backend).await;
    let c = Mock::start("gamma", &["gpt-c"]).await;
    let provider_secret = "sk-never-shown-provider-key-42";
    // A provider that authenticates with a header of its own carries a secret there too.
    let header_secret = "hdr-never-shown-secret-value-43";
    let admin = gw.admin().await;
    let mut seen = String::new();
    let (_, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "gamma", "base_url": c.url(), "api_keys": [{"key": provider_secret}],
                    "headers": {"api-key": header_secret}}),
        ),
    )
    .await;
    seen.push_str(&v.to_string());
    // A key sent in the config file's shape (a bare string where an object is expected): refused,
    // without quoting it back.
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "delta", "base_url": c.url(), "api_keys": [provider_secret]})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    seen.push_str(&v.to_string());
    let keys = format!("/users/{}/api-keys", admin.user_id);
    let (_, v) = send(&gw, Method::POST, &keys, Some(json!({"name": "k"}))).await;
    let client_key = v["key"].as_str().unwrap().to_string();
    let key_id = v["id"].as_str().unwrap().to_string();
    // Everything after creation: answers, errors, probes, proxy traffic.
    a.script([Reply::status(401)]);
    for (m, p, body) in [
        (Method::GET, "/providers".to_string(), None),
        (Method::GET, "/providers/gamma".into(), None),
        (Method::GET, "/providers/gamma/keys".into(), None),
        (Method::GET, "/providers/gamma/models".into(), None),
        (Method::GET, "/providers/gamma/health".into(), None),
        (Method::GET, keys.clone(), None),
        (
            Method::PUT,
            format!("{keys}/{key_id}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::POST, "/providers/gamma/keys".into(), Some(json!({"key": ""}))),
        (Method::POST, "/routing/decide".into(), Some(json!({"model": "gpt-c"}))),
    ] {
        seen.push_str(&send(&gw, m, &p, body).await.1.to_string());
    }
    for model in ["gpt-c", "gpt-a", "nope"] {
        let r = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&client_key)
            .json(&chat_body(model))
            .send()
            .await
            .unwrap();
        seen.push_str(&format!("{:?}", r.headers()));
        seen.push_str(&r.text().await.unwrap());
    }
    seen.push_str(&String::from_utf8_lossy(
        &gw.client
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    ));
    let logs = gw.logs_when(|l| l.contains("admin request")).await;
    for secret in [provider_secret, header_secret, client_key.as_str()] {
        assert!(!seen.contains(secret), "{secret} in an answer");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    assert!(logs.contains("admin request"), "admin requests are logged");
    // At rest: the database holds no secret in clear (the SQLite file; every row of every
    // PostgreSQL table, as text).
    let stored = match gw.database_url.strip_prefix("sqlite://") {
        // The file and its write-ahead log, where recent rows are until a checkpoint.
        Some(path) => ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::read(format!("{path}{suffix}")).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect(),
        None => every_row_as_text(&gw.database_url).await,
    };
    assert!(
        stored.contains("gamma") || stored.contains("admin"),
        "the rows were read"
    );
    for secret in [provider_secret, header_secret, client_key.as_str()] {
        assert!(!stored.contains(secret), "{secret} at rest");
    }
}

/// Every row of every table of a PostgreSQL database, as text.
async fn every_row_as_text(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    let mut text = String::new();
    for t in tables {
        let name: String = t.get(0);
        for row in client
            .query(&format!("SELECT t::text FROM \"{name}\" t"), &[])
            .await
            .unwrap()
        {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    drop(client);
    let _ = task.await;
    text
}

async fn replicas_converge_through_the_database(backend: Backend) {
    let a = Mock::start("alpha", &["gpt-a"]).await;
    let yaml = format!("providers:\n{}", provider_yaml("alpha", &a, ", models: [gpt-a]"));
    let first = Gateway::start_on(backend, &yaml, &[]).await;
    // The second replica shares the database and the secret kept in the first one's data folder.
    let secret = std::fs::read_to_string(first.log_path().parent().unwrap().join("data/secret_key")).unwrap();
    let second = Gateway::start_on(
        backend,
        &yaml,
        &[("DATABASE_URL", &first.database_url), ("SECRET_KEY", secret.trim())],
    )
    .await;
    let admin = first.admin().await;
    let (_, v) = send(
        &first,
        Method::POST,
        &format!("/users/{}/api-keys", admin.user_id),
        Some(json!({"name": "r"})),
    )
    .await;
    let key = v["key"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    until_status(&second, &key, "gpt-a", 200).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "replica converged after {:?}",
        t0.elapsed()
    );
}

/// `apiproxy rotate-secret` with the given secrets against `gw`'s database: (success, output).
fn rotate_secret(gw: &Gateway, current: &str, previous: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_apiproxy"));
    cmd.arg("rotate-secret")
        .env("DATABASE_URL", &gw.database_url)
        .env("SECRET_KEY", current)
        .env_remove("SECRET_KEY_PREVIOUS");
    if let Some(p) = previous {
        cmd.env("SECRET_KEY_PREVIOUS", p);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn rotating_the_secret_keeps_every_stored_key(backend: Backend) {
    const OLD: &str = "old-secret-old-secret-old-secret-0001";
    const NEW: &str = "new-secret-new-secret-new-secret-0002";
    let provider_secret = "sk-gamma-stored-key-0123456789";
    let header_secret = "hdr-gamma-stored-value-0123456789";
    let c = Mock::start("gamma", &["gpt-c"]).await;
    let old = Gateway::start_on(backend, "", &[("SECRET_KEY", OLD)]).await;
    let (s, v) = send(
        &old,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "gamma", "base_url": c.url(), "api_keys": [{"key": provider_secret}],
                    "headers": {"x-gateway-token": header_secret}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let admin = old.admin().await;
    let (_, v) = send(
        &old,
        Method::POST,
        &format!("/users/{}/api-keys", admin.user_id),
        Some(json!({"name": "before-rotation"})),
    )
    .await;
    let minted = v["key"].as_str().unwrap().to_string();
    until_status(&old, &minted, "gpt-c", 200).await;
    let admin_status = |gw: &Gateway| {
        let req = gw.client.get(gw.admin_url("/users")).bearer_auth(&admin.token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let on = |gw: &Gateway, secrets: &[(&'static str, &'static str)]| {
        let mut env = vec![("DATABASE_URL", gw.database_url.clone())];
        env.extend(secrets.iter().map(|(k, v)| (*k, v.to_string())));
        env
    };
    let start = |env: Vec<(&'static str, String)>| async move {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Gateway::start_on(backend, "", &env).await
    };
    let used_key = |c: &Mock| c.last().and_then(|r| r.header("authorization").map(str::to_string));
    let used_header = |c: &Mock| c.last().and_then(|r| r.header("x-gateway-token").map(str::to_string));

    // Refused without the previous secret, or when neither secret opens the stored key.
    let (ok, text) = rotate_secret(&old, NEW, None);
    assert!(!ok && text.contains("SECRET_KEY_PREVIOUS is not set"), "{text}");
    let (ok, text) = rotate_secret(&old, NEW, Some("wrong-secret-wrong-secret-wrong-0003"));
    assert!(!ok && text.contains("opens with neither"), "{text}");
    assert!(
        text.contains("nothing was changed") && !text.contains(provider_secret),
        "{text}"
    );

    // A replica rolled onto the new secret with the old one as previous serves everything.
    let rolled = start(on(&old, &[("SECRET_KEY", NEW), ("SECRET_KEY_PREVIOUS", OLD)])).await;
    until_status(&rolled, &minted, "gpt-c", 200).await;
    assert_eq!(
        admin_status(&rolled).await,
        401,
        "an admin token of the old secret: whoever leaked it could sign any"
    );
    assert_eq!(
        used_key(&c).as_deref(),
        Some(format!("Bearer {provider_secret}").as_str())
    );

    let (ok, text) = rotate_secret(&old, NEW, Some(OLD));
    assert!(ok, "{text}");
    assert!(
        text.contains("sealed again under SECRET_KEY: 1, already under it: 0"),
        "{text}"
    );
    assert!(text.contains("header values were sealed again: 1"), "{text}");
    assert!(text.contains("Minted client keys: 1"), "{text}");
    let (ok, text) = rotate_secret(&old, NEW, Some(OLD));
    assert!(
        ok && text.contains("sealed again under SECRET_KEY: 0, already under it: 1"),
        "{text}"
    );
    assert!(text.contains("header values were sealed again: 0"), "{text}");

    // On the new secret alone: the provider key opens; keys minted before are refused.
    let new_only = start(on(&old, &[("SECRET_KEY", NEW)])).await;
    until_status(&new_only, CLIENT_KEY, "gpt-c", 200).await;
    assert_eq!(
        used_key(&c).as_deref(),
        Some(format!("Bearer {provider_secret}").as_str())
    );
    assert_eq!(used_header(&c).as_deref(), Some(header_secret));
    until_status(&new_only, &minted, "gpt-c", 401).await;
    assert_eq!(admin_status(&new_only).await, 401, "log:\n{}", new_only.logs());
    // The rolled replica still takes them, and its snapshot (rebuilt after the rotation) still has
    // the provider key.
    until_status(&rolled, &minted, "gpt-c", 200).await;
    assert_eq!(
        used_key(&c).as_deref(),
        Some(format!("Bearer {provider_secret}").as_str())
    );

    // On a secret that opens neither (SECRET_KEY_PREVIOUS dropped before the rotation ran, a
    // replica started on a secret of its own): the stored header cannot be read, so the provider is
    // out of routing. Keeping it is refused; giving every header anew replaces it.
    let lost = start(on(&old, &[("SECRET_KEY", "lost-secret-lost-secret-lost-secret-04")])).await;
    let token = lost.login("admin", &admin.password).await;
    let put = |headers: Value| {
        as_token(
            &lost,
            &token,
            Method::PUT,
            "/providers/gamma",
            Some(json!({"headers": headers})),
        )
    };
    let (s, v) = put(json!({"x-gateway-token": "hdr…6789"})).await;
    assert_eq!(s, 409, "a masked value keeps what cannot be read: {v}");
    let (s, v) = put(json!({"x-gateway-token": "hdr-replaced-value-0123456789"})).await;
    assert_eq!(s, 200, "{v}");
    let key = json!({"key": "sk-gamma-replaced-key-0123456789"});
    let (s, v) = as_token(&lost, &token, Method::POST, "/providers/gamma/keys", Some(key)).await;
    assert_eq!(s, 201, "{v}");
    until_status(&lost, CLIENT_KEY, "gpt-c", 200).await;
    assert_eq!(used_header(&c).as_deref(), Some("hdr-replaced-value-0123456789"));
}

/// A user's change to their own key is written only if, at the moment of writing, it still only
/// narrows the key: an admin's disable or shorter expiry that lands between the user's check and
/// write is not undone (the store's conditional update, driven directly to hit that window).
async fn a_user_s_write_never_undoes_an_admin_s_stop(backend: Backend) {
    use apiproxy::store::{models::*, DatabaseUrl, Store, StoreError};
    let (_a, _b, gw) = setup(backend).await;
    let store = Store::open(&DatabaseUrl::parse(&gw.database_url).unwrap())
        .await
        .unwrap();
    let now = apiproxy::store::now();
    store
        .insert_user(&UserRow {
            id: "u-race".into(),
            username: "racer".into(),
            email: None,
            display_name: None,
            password_hash: "x".into(),
            role: "user".into(),
            disabled: false,
            token_version: 0,
            created_at: now,
            updated_at: now,
            key_allowed_providers: None,
            key_rate_limit_rps: None,
        })
        .await
        .unwrap();
    let expiry = now + 1000;
    store
        .insert_api_key(&ApiKeyRow {
            id: "k-race".into(),
            user_id: "u-race".into(),
            name: "k".into(),
            key_hash: "h-race".into(),
            prefix: "p".into(),
            expires_at: Some(expiry),
            // What the admin just did: the user's check saw the key enabled.
            disabled: true,
            allowed_providers: None,
            rate_limit_rps: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let update = |changes: ApiKeyChanges, only_narrowing: bool| {
        let store = store.clone();
        async move { store.update_api_key("u-race", "k-race", &changes, only_narrowing).await }
    };
    let user = |changes| update(changes, true);
    let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::NotFound));
    assert!(refused(
        user(ApiKeyChanges {
            disabled: Some(false),
            ..Default::default()
        })
        .await
    ));
    assert!(refused(
        user(ApiKeyChanges {
            expires_at: Some(None),
            ..Default::default()
        })
        .await
    ));
    assert!(refused(
        user(ApiKeyChanges {
            expires_at: Some(Some(expiry + 1)),
            ..Default::default()
        })
        .await
    ));
    let key = || async { store.get_api_key("u-race", "k-race").await.unwrap().unwrap() };
    assert_eq!((key().await.disabled, key().await.expires_at), (true, Some(expiry)));
    // What still narrows goes through: a rename, disabling again, an earlier expiry.
    user(ApiKeyChanges {
        name: Some("renamed".into()),
        disabled: Some(true),
        expires_at: Some(Some(expiry - 1)),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(key().await.name, "renamed");
    // An admin may do anything.
    update(
        ApiKeyChanges {
            disabled: Some(false),
            expires_at: Some(None),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!((key().await.disabled, key().await.expires_at), (false, None));
    // A key without expiry: any expiry narrows it.
    user(ApiKeyChanges {
        expires_at: Some(Some(expiry)),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(key().await.expires_at, Some(expiry));
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

both_backends!(
    racing_inits_create_one_admin,
    cross_site_changes_are_refused,
    bootstrap_login_refresh_logout,
    every_endpoint_needs_a_valid_token,
    expired_token_is_refused,
    users_crud_and_disable,
    api_keys_are_live_within_a_second,
    key_limits_rate_and_providers,
    a_user_s_key_limits_bind_every_key_the_user_makes,
    a_provider_key_at_its_rate_limit_is_a_rate_limit,
    providers_crud_and_live_routing,
    logical_models_and_routing,
    secrets_never_leak,
    replicas_converge_through_the_database,
    rotating_the_secret_keeps_every_stored_key,
    odd_text_is_refused_or_read_as_meant,
    a_header_secret_is_never_shown,
    a_user_s_changes_and_keys_are_bounded,
    a_user_s_write_never_undoes_an_admin_s_stop,
);

/// The token counter's `client` label holds the names of keys that exist: a deleted or renamed
/// key's series goes at the next configuration swap, so key churn cannot grow the label set.
#[tokio::test(flavor = "multi_thread")]
async fn token_series_of_deleted_and_renamed_keys_are_forgotten() {
    let (_a, _b, gw) = setup(Backend::Sqlite).await;
    let admin = gw.admin().await;
    let keys = format!("/users/{}/api-keys", admin.user_id);
    let mut minted = Vec::new();
    for name in ["churn-deleted", "churn-renamed", "churn-kept"] {
        let (s, v) = send(&gw, Method::POST, &keys, Some(json!({"name": name}))).await;
        assert_eq!(s, 201, "{v}");
        let key = v["key"].as_str().unwrap().to_string();
        until_status(&gw, &key, "gpt-a", 200).await;
        minted.push((v["id"].as_str().unwrap().to_string(), key));
    }
    // Minted keys are counted under their owner's name and theirs.
    let tokens =
        |text: &str, client: &str| metric(text, "apiproxy_tokens_total", &[("client", &format!("admin/{client}"))]);
    let text = gw.metrics().await;
    for name in ["churn-deleted", "churn-renamed", "churn-kept"] {
        assert!(tokens(&text, name) > 0.0, "{name}: {text}");
    }
    let (s, _) = send(&gw, Method::DELETE, &format!("{keys}/{}", minted[0].0), None).await;
    assert_eq!(s, 204);
    let (s, _) = send(
        &gw,
        Method::PUT,
        &format!("{keys}/{}", minted[1].0),
        Some(json!({"name": "churn-new-name"})),
    )
    .await;
    assert_eq!(s, 200);
    let text = gw.metrics().await;
    assert_eq!(tokens(&text, "churn-deleted"), 0.0, "{text}");
    assert!(
        !text.contains("churn-deleted") && !text.contains("churn-renamed"),
        "{text}"
    );
    assert!(tokens(&text, "churn-kept") > 0.0, "a key that exists keeps its series");
    until_status(&gw, &minted[1].1, "gpt-a", 200).await;
    assert!(tokens(&gw.metrics().await, "churn-new-name") > 0.0);
}

/// A stored provider `p` (OpenAI-style, no settings) with one key `k` sealed as `sealed`, for the
/// store's own tests.
fn provider_p_with_key_k(sealed: &str) -> apiproxy::store::ProviderBundle {
    use apiproxy::store::models::{ProviderKeyRow, ProviderRow};
    apiproxy::store::ProviderBundle {
        row: ProviderRow {
            id: "p".into(),
            base_url: "http://127.0.0.1:9".into(),
            api_style: "openai".into(),
            provider_type: "openai".into(),
            weight: 1.0,
            settings: "{}".into(),
            created_at: 0,
            updated_at: 0,
        },
        keys: vec![ProviderKeyRow {
            id: "k".into(),
            provider_id: "p".into(),
            encrypted_key: sealed.into(),
            hint: "sk-…".into(),
            qps_limit: None,
            disabled: false,
            created_at: 0,
            updated_at: 0,
        }],
        models: vec![],
    }
}

/// A provider key or settings an admin changes while `rotate-secret` is resealing are resealed in
/// their new form, not overwritten with the old (PostgreSQL's default isolation allows the lost
/// update).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_changed_during_a_reseal_keeps_its_change() {
    use apiproxy::store::models::ProviderKeyChanges;
    use apiproxy::store::{DatabaseUrl, ProviderWrite, Store, StoreError};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    let (name, url) = fresh_pg_database().await;
    let db_url = DatabaseUrl::parse(&url).unwrap();
    let store = Store::open(&db_url).await.unwrap();
    store
        .insert_provider(&provider_p_with_key_k("sealed-before"))
        .await
        .unwrap();

    // The reseal reads the settings and the key, then an admin's change to each commits (from
    // another connection, as another replica's would), then the reseal writes.
    let other = Store::open(&db_url).await.unwrap();
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
    }
    let (settings_changed, key_changed) = (AtomicBool::new(false), AtomicBool::new(false));
    let done = store
        .reseal_providers(
            |key| {
                if !key_changed.swap(true, SeqCst) {
                    let change = ProviderKeyChanges {
                        encrypted_key: Some("sealed-by-the-admin".into()),
                        ..Default::default()
                    };
                    block_on(other.update_provider_key("p", "k", &change)).unwrap();
                }
                Ok(Some(format!("resealed({})", key.encrypted_key)))
            },
            |provider| {
                if !settings_changed.swap(true, SeqCst) {
                    let mut edited = provider.clone();
                    edited.settings = "by-the-admin".into();
                    let write = ProviderWrite {
                        row: &edited,
                        read_settings: &provider.settings,
                        models: None,
                        keys: None,
                    };
                    block_on(other.update_provider(write)).unwrap();
                }
                Ok(Some(format!("resealed({})", provider.settings)))
            },
        )
        .await
        .unwrap();
    assert_eq!((done.keys, done.keys_left, done.settings), (1, 0, 1));
    let bundle = store.provider_bundle("p").await.unwrap().unwrap();
    assert_eq!(
        bundle.row.settings, "resealed(by-the-admin)",
        "the admin's change was lost"
    );
    assert_eq!(
        bundle.keys[0].encrypted_key, "resealed(sealed-by-the-admin)",
        "the admin's change was lost"
    );
    // A write made from what was read before another write landed is refused, not applied over it.
    let mut late = bundle.row.clone();
    late.settings = "late".into();
    let write = ProviderWrite {
        row: &late,
        read_settings: "by-the-admin",
        models: None,
        keys: None,
    };
    assert!(matches!(store.update_provider(write).await, Err(StoreError::Stale)));
    drop((store, other));
    drop_pg_database(&name).await;
}

/// A write that waits on a row lock past the operation's limit (a `rotate-secret` holding every
/// key) is told it was not saved, and is not: PostgreSQL gives up its wait before the gateway
/// gives up on it, instead of applying it once the lock is free.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_timed_out_on_a_lock_does_not_land_later() {
    use apiproxy::store::models::ProviderKeyChanges;
    use apiproxy::store::{DatabaseUrl, Store};

    let (name, url) = fresh_pg_database().await;
    let store = Store::open(&DatabaseUrl::parse(&url).unwrap()).await.unwrap();
    store.insert_provider(&provider_p_with_key_k("sealed")).await.unwrap();
    let (holder, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; SELECT * FROM provider_api_keys WHERE id = 'k' FOR UPDATE")
        .await
        .unwrap();
    let change = ProviderKeyChanges {
        disabled: Some(true),
        ..Default::default()
    };
    assert!(store.update_provider_key("p", "k", &change).await.is_err());
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = store.provider_bundle("p").await.unwrap().unwrap();
    assert!(!after.keys[0].disabled, "the write the admin was told failed landed");
    drop((holder, store));
    let _ = task.await;
    drop_pg_database(&name).await;
}

/// A username whose logins keep failing waits before each further try, the right password
/// included, so a password cannot be guessed at the speed of its hash; other names are not held.
#[tokio::test(flavor = "multi_thread")]
async fn a_username_whose_logins_keep_failing_must_wait() {
    let (_a, _b, gw) = setup(Backend::Sqlite).await;
    let admin = gw.admin().await;
    let login = |username: &'static str, password: String| {
        let request = gw
            .client
            .post(gw.admin_url("/auth/login"))
            .json(&json!({"username": username, "password": password}));
        async move { request.send().await.unwrap() }
    };
    for i in 0..5 {
        let r = login("admin", format!("wrong-password-{i}")).await;
        assert_eq!(r.status(), 401, "try {i}");
    }
    let r = login("admin", admin.password.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limited", "{v}");
    assert_eq!(login("nobody", "whatever-123456".into()).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login("admin", admin.password.clone()).await.status(), 200);
    // A success forgets the failures.
    assert_eq!(login("admin", "wrong-again-123".into()).await.status(), 401);
    assert_eq!(login("admin", admin.password.clone()).await.status(), 200);
}

/// Tries sent in parallel count from the moment they are let in, not once their password has been
/// checked: a burst of wrong passwords gets five checked, the rest wait, as one after another would.
#[tokio::test(flavor = "multi_thread")]
async fn logins_sent_in_parallel_get_no_more_tries() {
    let (_a, _b, gw) = setup(Backend::Sqlite).await;
    let tries = (0..12).map(|i| {
        let request = gw
            .client
            .post(gw.admin_url("/auth/login"))
            .json(&json!({"username": "admin", "password": format!("guess-{i}")}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures_util::future::join_all(tries).await;
    statuses.sort();
    assert_eq!(statuses, [[401; 5].as_slice(), &[429; 7]].concat(), "{statuses:?}");
}

/// A client that tries a few passwords on each of many names (password spraying) waits too, once
/// its address has failed 20 times in a row, whatever names it tried, the right password included;
/// but a name that signed in from that address before is not kept out by others' failures.
#[tokio::test(flavor = "multi_thread")]
async fn an_address_whose_logins_keep_failing_must_wait() {
    let (_a, _b, gw) = setup(Backend::Sqlite).await;
    let admin = gw.admin().await;
    let (s, v) = send(&gw, Method::POST, "/users", Some(json!({"username": "carol"}))).await;
    assert_eq!(s, 201, "{v}");
    let carol = v["password"].as_str().unwrap().to_string();
    let login = |username: String, password: &str| {
        let request = gw
            .client
            .post(gw.admin_url("/auth/login"))
            .json(&json!({"username": username, "password": password}));
        async move { request.send().await.unwrap() }
    };
    for i in 0..20 {
        let r = login(format!("user-{i}"), "Spring2026!").await;
        assert_eq!(r.status(), 401, "try {i}");
    }
    let r = login("carol".into(), &carol).await;
    assert_eq!(r.status(), 429, "the address is held, not only names it failed on");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        login("admin".into(), &admin.password).await.status(),
        200,
        "the admin signed in from here before"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login("carol".into(), &carol).await.status(), 200);
}

/// A provider moved to another server forgets what its old one listed: until the new one lists
/// its models, none of the old server's are offered or routed to it (the new one may serve none
/// of them).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_moved_elsewhere_forgets_its_old_model_list() {
    let old = Mock::start("old", &["only-on-old"]).await;
    let new = Mock::start("new", &["m"]).await;
    // The new server cannot list its models.
    new.set_default(Reply::status(500));
    let gw = Gateway::start("").await;
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "moving", "base_url": old.url(), "api_keys": [{"key": "sk-moving-key-0123"}]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    until("the old server's list", Duration::from_secs(5), async || {
        gw.model_ids("/v1/models", CLIENT_KEY)
            .await
            .contains(&"only-on-old".to_string())
    })
    .await;
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/providers/moving",
        Some(json!({"base_url": new.url(), "api_keys": [{"key": "sk-moving-key-0123"}]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    until("the old list forgotten", Duration::from_secs(5), async || {
        !gw.model_ids("/v1/models", CLIENT_KEY)
            .await
            .contains(&"only-on-old".to_string())
    })
    .await;
    let r = gw.chat(chat_body("only-on-old")).await;
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
}

/// A config file that later gains an id the database already has wins: the stored provider is
/// ignored by routing and listed as shadowed; the file's is the one that answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stored_provider_the_file_later_names_is_shadowed() {
    let stored_upstream = Mock::start("stored", &["m"]).await;
    let file_upstream = Mock::start("file", &["m"]).await;
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("shared.db").display());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SECRET_KEY", "shadow-test-secret-0123456789abcdef0123"),
    ];
    let gw = Gateway::start_with_env("", &env).await;
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "gamma", "base_url": stored_upstream.url(), "models": [{"model": "m"}],
            "api_keys": [{"key": "sk-gamma-stored-0123"}]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let password = gw.admin().await.password;
    drop(gw);
    let gw = Gateway::start_with_env(
        &format!(
            "providers:\n{}",
            provider_yaml("gamma", &file_upstream, ", models: [m]")
        ),
        &env,
    )
    .await;
    let r = gw.chat(chat_body("gamma/m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(file_upstream.hits(), 1);
    assert_eq!(stored_upstream.hits(), 0, "the stored provider is shadowed");
    // The database's admin signs in to this gateway too.
    let token = gw.login("admin", &password).await;
    let (s, v) = as_token(&gw, &token, Method::GET, "/providers", None).await;
    assert_eq!(s, 200);
    let gammas: Vec<&Value> = v["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == "gamma")
        .collect();
    assert_eq!(gammas.len(), 2, "{v}");
    assert!(gammas.iter().any(|p| p["source"] == "config"), "{v}");
    assert!(
        gammas
            .iter()
            .any(|p| p["source"] == "database" && p["shadowed"] == true),
        "{v}"
    );
}

/// Without a `DATABASE_URL`, the embedded database lives in `APIPROXY_DATA_DIR` with the
/// generated secret, so a data folder moved to a volume takes both (it was kept in `data/` under
/// the working folder whatever the data folder).
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_database_lives_in_the_data_folder() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("state");
    let folder_text = folder.display().to_string();
    let gw = Gateway::start_with_env("", &[("DATABASE_URL", ""), ("APIPROXY_DATA_DIR", &folder_text)]).await;
    gw.admin().await;
    assert!(folder.join("apiproxy.db").is_file(), "no database in {folder_text}");
    assert!(folder.join("secret_key").is_file());
}

/// A stream the upstream refused for the gateway's own `stream_options` is asked again at once,
/// and that second call spends a key's budget as the first did: with two keys of 1 request/s, it
/// goes out on the other key, never twice on one key within its second.
#[tokio::test(flavor = "multi_thread")]
async fn asking_again_without_stream_options_spends_a_key_s_budget() {
    let (_a, _b, gw) = setup(Backend::Sqlite).await;
    let d = Mock::start("delta", &["gpt-d"]).await;
    d.set_refuse_stream_options(Some(Mock::MISTRAL_STREAM_OPTIONS));
    let keys = json!([{"key": "sk-delta-first-0123456789", "qps_limit": 1}, {"key": "sk-delta-second-0123456789", "qps_limit": 1}]);
    let body = json!({"id": "delta", "base_url": d.url(), "api_keys": keys, "models": [{"model": "gpt-d"}]});
    let (s, v) = send(&gw, Method::POST, "/providers", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    until_status(&gw, CLIENT_KEY, "gpt-d", 200).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.clear();
    let stream = json!({"model": "gpt-d", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.chat(stream).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sse_data(r).await.last().map(String::as_str), Some("[DONE]"));
    let sent = d.requests();
    assert_eq!(sent.len(), 2, "refused, then asked without the field");
    let key = |i: usize| sent[i].header("authorization").map(str::to_string);
    assert_ne!(key(0), key(1), "the second call on the other key");
}

/// A provider whose circuit opened under a wrong `base_url` is judged afresh once the URL is
/// fixed: it answers at once, not after its circuit's wait (five minutes here).
#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_provider_is_not_kept_out_by_its_old_circuit() {
    let broken = Mock::start("broken", &["m"]).await;
    broken.set_default(Reply::status(503));
    let fixed = Mock::start("fixed", &["m"]).await;
    let gw = Gateway::start("server: {circuit_failure_threshold: 2, circuit_open_s: 300}\n").await;
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(
            json!({"id": "gamma", "base_url": broken.url(), "models": [{"model": "m"}],
            "api_keys": [{"key": "sk-gamma-key-0123"}]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    for _ in 0..2 {
        assert_eq!(proxy_status(&gw, CLIENT_KEY, "m").await.0, 503);
    }
    let hits = broken.hits();
    assert_ne!(proxy_status(&gw, CLIENT_KEY, "m").await.0, 200);
    assert_eq!(broken.hits(), hits, "the circuit is open");
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/providers/gamma",
        Some(json!({"base_url": fixed.url(), "api_keys": [{"key": "sk-gamma-key-0123"}]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(proxy_status(&gw, CLIENT_KEY, "m").await, (200, Some("gamma".into())));
}

/// A provider's header values, secrets among them, do not follow it to another host unless they
/// are given anew: a masked value (or none given) is refused with the move.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_provider_s_headers_must_be_given_anew() {
    let first = Mock::start("first", &["m"]).await;
    let elsewhere = Mock::start("elsewhere", &["m"]).await;
    let gw = Gateway::start("").await;
    let secret = "hdr-secret-value-0123456789abcdef";
    let (s, v) = send(
        &gw,
        Method::POST,
        "/providers",
        Some(json!({"id": "hdr", "base_url": first.url(), "headers": {"api-key": secret}, "models": [{"model": "m"}]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let shown = v["settings"]["headers"]["api-key"].as_str().unwrap().to_string();
    for body in [
        json!({"base_url": elsewhere.url()}),
        json!({"base_url": elsewhere.url(), "headers": {"api-key": shown}}),
    ] {
        let (s, v) = send(&gw, Method::PUT, "/providers/hdr", Some(body.clone())).await;
        assert_eq!(s, 409, "{body} -> {v}");
        assert!(v.to_string().contains("headers"), "{v}");
    }
    // The same host at another path keeps them.
    let (s, v) = send(
        &gw,
        Method::PUT,
        "/providers/hdr",
        Some(json!({"base_url": format!("{}/v1", first.url())})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let anew = json!({"base_url": elsewhere.url(), "headers": {"api-key": "hdr-other-value-0123456789abcdef"}});
    let (s, v) = send(&gw, Method::PUT, "/providers/hdr", Some(anew)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(proxy_status(&gw, CLIENT_KEY, "m").await, (200, Some("hdr".into())));
    let sent = elsewhere.last().and_then(|r| r.header("api-key").map(str::to_string));
    assert_eq!(sent.as_deref(), Some("hdr-other-value-0123456789abcdef"));
}
