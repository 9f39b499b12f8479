//! The portable schema: ids as text, times as UTC timestamps.

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        kind -> Text,
        email -> Nullable<Text>,
        phone -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        full_name -> Text,
        role -> Text,
        organization_id -> Nullable<Text>,
        rpps -> Nullable<Text>,
        phone -> Nullable<Text>,
        active -> Bool,
        password_hash -> Nullable<Text>,
        token_version -> Integer,
        notification_preference -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    invitations (id) {
        id -> Text,
        user_id -> Text,
        token_hash -> Text,
        expires_at -> Timestamp,
        accepted_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        user_id -> Text,
        family_id -> Text,
        token_hash -> Text,
        issued_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Text,
        email -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    email_outbox (id) {
        id -> Text,
        to_address -> Text,
        subject -> Text,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(invitations -> users (user_id));
diesel::joinable!(refresh_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    invitations,
    refresh_tokens,
    login_failures,
    email_outbox,
);
