//! The one diesel schema both backends share (see `migrations/sqlite` and `migrations/postgres`).

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        password_hash -> Text,
        role -> Text,
        disabled -> Bool,
        token_version -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        key_allowed_providers -> Nullable<Text>,
        key_rate_limit_rps -> Nullable<Integer>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        key_hash -> Text,
        prefix -> Text,
        expires_at -> Nullable<BigInt>,
        disabled -> Bool,
        allowed_providers -> Nullable<Text>,
        rate_limit_rps -> Nullable<Integer>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    providers (id) {
        id -> Text,
        base_url -> Text,
        api_style -> Text,
        provider_type -> Text,
        weight -> Double,
        settings -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    provider_api_keys (id) {
        id -> Text,
        provider_id -> Text,
        encrypted_key -> Text,
        hint -> Text,
        qps_limit -> Nullable<Integer>,
        disabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    provider_models (id) {
        id -> Text,
        provider_id -> Text,
        model -> Text,
        alias -> Nullable<Text>,
        disabled -> Bool,
        metadata -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    logical_models (id) {
        id -> Text,
        description -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    logical_model_upstreams (id) {
        id -> Text,
        logical_model_id -> Text,
        provider_id -> Text,
        model -> Text,
        weight -> Double,
        priority -> Integer,
        position -> Integer,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        expires_at -> BigInt,
    }
}

diesel::table! {
    config_version (id) {
        id -> Integer,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(users, api_keys);
