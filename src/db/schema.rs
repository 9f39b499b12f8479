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
    totp_factors (user_id) {
        user_id -> Text,
        secret -> Text,
        confirmed_at -> Nullable<Timestamp>,
        last_step -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> Text,
        user_id -> Text,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    oidc_subjects (provider, subject) {
        provider -> Text,
        subject -> Text,
        user_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    oidc_flows (state_hash) {
        state_hash -> Text,
        provider -> Text,
        nonce -> Text,
        pkce_verifier -> Text,
        redirect_uri -> Text,
        client_state -> Nullable<Text>,
        invitation_hash -> Nullable<Text>,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    oidc_codes (code_hash) {
        code_hash -> Text,
        user_id -> Text,
        provider -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Text,
        account_hash -> Text,
        client_addr -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        client_addr -> Nullable<Text>,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        mfa_enrol_only -> Bool,
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

diesel::table! {
    /// One row per event per recipient (`notify::events`).
    events (id) {
        id -> BigInt,
        user_id -> Text,
        kind -> Text,
        patient_id -> Nullable<Text>,
        data -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    event_horizon (id) {
        id -> Integer,
        purged_through -> BigInt,
    }
}

diesel::table! {
    event_stream_leases (id) {
        id -> Text,
        user_id -> Text,
        instance -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    event_tickets (ticket_hash) {
        ticket_hash -> Text,
        user_id -> Text,
        session_id -> Text,
        token_version -> Integer,
        token_expires_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(invitations -> users (user_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(totp_factors -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(oidc_subjects -> users (user_id));
diesel::joinable!(oidc_codes -> users (user_id));

diesel::table! {
    patients (id) {
        id -> Text,
        ins -> Nullable<Text>,
        family_name -> Text,
        given_names -> Text,
        birth_date -> Date,
        sex -> Text,
        phone -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    consents (id) {
        id -> Text,
        patient_id -> Text,
        status -> Text,
        note -> Nullable<Text>,
        recorded_by -> Text,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    care_team_members (id) {
        id -> Text,
        patient_id -> Text,
        user_id -> Text,
        team_role -> Text,
        since -> Timestamp,
        until -> Nullable<Timestamp>,
        added_by -> Text,
        ended_by -> Nullable<Text>,
    }
}

diesel::table! {
    access_requests (id) {
        id -> Text,
        patient_id -> Text,
        requester_id -> Text,
        reason -> Text,
        status -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    emergency_grants (id) {
        id -> Text,
        patient_id -> Text,
        user_id -> Text,
        reason -> Text,
        granted_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    notifications (id) {
        id -> Text,
        user_id -> Text,
        kind -> Text,
        resource_type -> Text,
        resource_id -> Text,
        patient_id -> Nullable<Text>,
        created_at -> Timestamp,
        read_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        id -> Text,
        at -> Timestamp,
        actor_id -> Nullable<Text>,
        actor_role -> Nullable<Text>,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Text>,
        patient_id -> Nullable<Text>,
        basis -> Nullable<Text>,
        outcome -> Text,
        request_id -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
        client_ip -> Nullable<Text>,
    }
}

diesel::table! {
    audit_head (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    care_plans (patient_id) {
        patient_id -> Text,
        current_version -> Integer,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    care_plan_versions (id) {
        id -> Text,
        patient_id -> Text,
        version -> Integer,
        status -> Text,
        content -> Text,
        warnings -> Text,
        acknowledged -> Text,
        change_summary -> Text,
        source_type -> Nullable<Text>,
        source_id -> Nullable<Text>,
        author_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    observations (id) {
        id -> Text,
        patient_id -> Text,
        author_id -> Text,
        pain_score -> Nullable<Integer>,
        sedation_score -> Nullable<Integer>,
        cows_score -> Nullable<Integer>,
        dose_dispensed_mg -> Nullable<Double>,
        note -> Nullable<Text>,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    observation_alerts (id) {
        id -> Text,
        patient_id -> Text,
        kind -> Text,
        opened_at -> Timestamp,
        closed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    handovers (id) {
        id -> Text,
        patient_id -> Text,
        from_user_id -> Text,
        to_user_id -> Text,
        summary -> Text,
        discharge_date -> Date,
        follow_up -> Nullable<Text>,
        proposed_plan -> Text,
        base_plan_version -> Nullable<Integer>,
        status -> Text,
        due_at -> Timestamp,
        created_at -> Timestamp,
        acknowledged_at -> Nullable<Timestamp>,
        reconciled_at -> Nullable<Timestamp>,
        decision -> Nullable<Text>,
        comment -> Nullable<Text>,
        resulting_plan_version -> Nullable<Integer>,
        reminded_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    consultations (id) {
        id -> Text,
        requester_id -> Text,
        centre_id -> Text,
        patient_id -> Nullable<Text>,
        priority -> Text,
        question -> Text,
        status -> Text,
        due_at -> Timestamp,
        created_at -> Timestamp,
        accepted_at -> Nullable<Timestamp>,
        accepted_by -> Nullable<Text>,
        answered_at -> Nullable<Timestamp>,
        answered_by -> Nullable<Text>,
        answer -> Nullable<Text>,
        proposed_plan -> Nullable<Text>,
        declined_at -> Nullable<Timestamp>,
        decline_reason -> Nullable<Text>,
        closed_at -> Nullable<Timestamp>,
        outcome -> Nullable<Text>,
        referral_avoided -> Nullable<Bool>,
        cancelled_at -> Nullable<Timestamp>,
        escalated_at -> Nullable<Timestamp>,
        applied_plan_version -> Nullable<Integer>,
        basis_until -> Nullable<Timestamp>,
    }
}

diesel::joinable!(care_plan_versions -> users (author_id));
diesel::joinable!(observations -> users (author_id));
diesel::joinable!(care_team_members -> patients (patient_id));
diesel::joinable!(consents -> patients (patient_id));
diesel::joinable!(access_requests -> patients (patient_id));
diesel::joinable!(emergency_grants -> patients (patient_id));

diesel::joinable!(care_team_members -> users (user_id));

diesel::table! {
    threads (id) {
        id -> Text,
        subject_type -> Text,
        subject_id -> Text,
        patient_id -> Nullable<Text>,
        created_at -> Timestamp,
        last_message_id -> Nullable<Text>,
        last_message_at -> Nullable<Timestamp>,
        activity_id -> Text,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        thread_id -> Text,
        author_id -> Text,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    thread_reads (thread_id, user_id) {
        thread_id -> Text,
        user_id -> Text,
        last_read_id -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (user_id, idem_key) {
        user_id -> Text,
        idem_key -> Text,
        fingerprint -> Text,
        status -> Integer,
        response -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    digest_runs (user_id, day) {
        user_id -> Text,
        day -> Date,
        created_at -> Timestamp,
        email_id -> Nullable<Text>,
    }
}

diesel::table! {
    clinical_contexts (id) {
        id -> Text,
        patient_id -> Text,
        version -> Integer,
        content -> Text,
        provenance -> Text,
        author_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    interventions (id) {
        id -> Text,
        patient_id -> Text,
        plan_version -> Integer,
        line_index -> Nullable<Integer>,
        drug -> Text,
        problem -> Text,
        proposed_action -> Text,
        note -> Nullable<Text>,
        author_id -> Text,
        addressee_id -> Text,
        status -> Text,
        created_at -> Timestamp,
        decided_at -> Nullable<Timestamp>,
        resolved_by_version -> Nullable<Integer>,
        comment -> Nullable<Text>,
    }
}

diesel::table! {
    dispensations (id) {
        id -> Text,
        patient_id -> Text,
        line_index -> Nullable<Integer>,
        drug -> Text,
        dose_mg -> Double,
        days_supply -> Integer,
        dispensed_on -> Date,
        early_refill -> Bool,
        author_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    end_reminders (patient_id, subject, ends_on) {
        patient_id -> Text,
        subject -> Text,
        ends_on -> Date,
        created_at -> Timestamp,
    }
}

diesel::joinable!(threads -> patients (patient_id));
diesel::joinable!(messages -> threads (thread_id));
diesel::joinable!(messages -> users (author_id));
diesel::joinable!(thread_reads -> threads (thread_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    invitations,
    refresh_tokens,
    login_failures,
    sessions,
    totp_factors,
    recovery_codes,
    oidc_subjects,
    oidc_flows,
    oidc_codes,
    email_outbox,
    patients,
    consents,
    care_team_members,
    access_requests,
    emergency_grants,
    notifications,
    audit_events,
    audit_head,
    care_plans,
    care_plan_versions,
    observations,
    observation_alerts,
    handovers,
    consultations,
    threads,
    messages,
    thread_reads,
    idempotency_keys,
    digest_runs,
    clinical_contexts,
    interventions,
    dispensations,
    end_reminders,
    events,
    event_horizon,
    event_stream_leases,
    event_tickets,
);
