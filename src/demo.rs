//! `relais demo`: loads a small, realistic care network for evaluation.
//!
//! Accounts are written directly (an invited user would need the token from
//! the invitation email); everything else goes through the HTTP API of a
//! server started on a loopback port for the occasion, so the data passes the
//! same rules as any client's: consent, care team, plan validation and the
//! safety rules, with every write audited.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use awc::http::Method;
use chrono::{Days, NaiveDate};
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::db::Db;
use crate::db::schema::users;
use crate::domain::role::Role;
use crate::startup::Application;
use crate::store::account::{NewAccount, create_account};

/// The password of every demo account. Demo data is for evaluation only.
pub const DEMO_PASSWORD: &str = "relais-demo-password";

/// One demo account.
pub struct DemoUser {
    /// Key of its organisation in [`ORGANIZATIONS`]; `None` for the admin.
    pub org: Option<&'static str>,
    pub email: &'static str,
    pub full_name: &'static str,
    pub role: Role,
    pub phone: Option<&'static str>,
}

/// The demo organisations: (key, name, kind, phone).
pub const ORGANIZATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "practice",
        "Cabinet médical du Port",
        "gp_practice",
        "02 98 00 10 10",
    ),
    (
        "pharmacy",
        "Pharmacie des Quais",
        "pharmacy",
        "02 98 00 20 20",
    ),
    (
        "hospital",
        "CHU de la Cavale Blanche",
        "hospital",
        "02 98 00 30 30",
    ),
    (
        "csapa",
        "CSAPA Douar Nevez",
        "addiction_centre",
        "02 98 00 40 40",
    ),
    (
        "pain",
        "Centre d'évaluation et de traitement de la douleur",
        "pain_centre",
        "02 98 00 50 50",
    ),
    (
        "nursing",
        "Cabinet infirmier de Recouvrance",
        "nursing_service",
        "02 98 00 60 60",
    ),
];

/// One user per role (a specialist at each centre).
pub const USERS: &[DemoUser] = &[
    DemoUser {
        org: None,
        email: "admin@demo.relais.test",
        full_name: "Alix Admin",
        role: Role::Admin,
        phone: None,
    },
    DemoUser {
        org: Some("practice"),
        email: "gp@demo.relais.test",
        full_name: "Dr Gwen Le Bihan",
        role: Role::Gp,
        phone: Some("02 98 00 10 11"),
    },
    DemoUser {
        org: Some("hospital"),
        email: "hospital@demo.relais.test",
        full_name: "Dr Yann Kervella",
        role: Role::HospitalDoctor,
        phone: Some("02 98 00 30 31"),
    },
    DemoUser {
        org: Some("csapa"),
        email: "addiction@demo.relais.test",
        full_name: "Dr Nolwenn Guéguen",
        role: Role::Specialist,
        phone: Some("02 98 00 40 41"),
    },
    DemoUser {
        org: Some("pain"),
        email: "pain@demo.relais.test",
        full_name: "Dr Erwan Caradec",
        role: Role::Specialist,
        phone: Some("02 98 00 50 51"),
    },
    DemoUser {
        org: Some("pharmacy"),
        email: "pharmacist@demo.relais.test",
        full_name: "Maëlle Quéré",
        role: Role::Pharmacist,
        phone: Some("02 98 00 20 21"),
    },
    DemoUser {
        org: Some("nursing"),
        email: "nurse@demo.relais.test",
        full_name: "Soizic Tanguy",
        role: Role::Nurse,
        phone: Some("06 12 00 60 61"),
    },
];

/// Loads the demo network into the configured database and prints the logins.
/// Refuses if part of it is there already; says so and prints the logins if
/// all of it is.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database.url, 2)?;
    db.migrate().await?;
    let emails: Vec<String> = USERS.iter().map(|u| u.email.to_owned()).collect();
    let existing: Vec<String> = db
        .read(move |conn| {
            Ok(users::table
                .filter(users::email.eq_any(&emails))
                .select(users::email)
                .load::<String>(conn)?)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if existing.len() == USERS.len() {
        println!("The demo network is already loaded.");
        print_logins();
        return Ok(());
    }
    if !existing.is_empty() {
        bail!(
            "part of the demo network is already in this database ({}); \
             load it into an empty database",
            existing.join(", ")
        );
    }

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let admin = &USERS[0];
    create_account(
        &db,
        &*clock,
        NewAccount {
            email: admin.email,
            full_name: admin.full_name,
            role: Role::Admin,
            organization_id: None,
            phone: None,
        },
        DEMO_PASSWORD,
    )
    .await?;

    // A private server on a loopback port: the demo calls the API like any client.
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 1;
    let zone = settings.time_zone();
    let app = Application::build(settings, clock.clone()).await?;
    let api = Api {
        base: format!("http://127.0.0.1:{}/api/v1", app.port()),
        client: awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish(),
    };
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let loaded = load(&api, &db, &*clock, zone).await;
    handle.stop(true).await;
    let _ = server.await;
    loaded?;
    println!("Demo network loaded.");
    print_logins();
    Ok(())
}

fn print_logins() {
    println!();
    println!("{:<30} {:<16} name", "login", "role");
    for user in USERS {
        println!(
            "{:<30} {:<16} {}",
            user.email,
            user.role.as_str(),
            user.full_name
        );
    }
    println!();
    println!("Every demo account's password: {DEMO_PASSWORD}");
    println!(
        "Live updates: sign in, then `curl -N <server>/api/v1/events -H 'authorization: Bearer <token>'` \
         and post a message from another account (README: Live updates)."
    );
    println!("Demo data is for evaluation only: never load it into a production database.");
}

/// The organisations', users' and tokens' ids, by key.
struct Ids {
    orgs: Vec<(&'static str, String)>,
    users: Vec<(&'static str, String, String)>,
}

impl Ids {
    fn org(&self, key: &str) -> &str {
        self.orgs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, id)| id.as_str())
            .unwrap_or_default()
    }

    /// (user id, access token) of a demo user, by email.
    fn user(&self, email: &str) -> (&str, &str) {
        self.users
            .iter()
            .find(|(e, _, _)| *e == email)
            .map(|(_, id, token)| (id.as_str(), token.as_str()))
            .unwrap_or_default()
    }
}

const GP: &str = "gp@demo.relais.test";
const HOSPITAL: &str = "hospital@demo.relais.test";
const PHARMACIST: &str = "pharmacist@demo.relais.test";
const NURSE: &str = "nurse@demo.relais.test";

async fn load(api: &Api, db: &Db, clock: &dyn Clock, zone: chrono_tz::Tz) -> anyhow::Result<()> {
    let admin = api.login(USERS[0].email).await?;
    let mut ids = Ids {
        orgs: Vec::new(),
        users: Vec::new(),
    };
    for (key, name, kind, phone) in ORGANIZATIONS {
        let email = format!("{key}@demo.relais.test");
        let org = api
            .call(
                Method::POST,
                "/organizations",
                &admin,
                Some(json!({"name": name, "kind": kind, "email": email, "phone": phone})),
                201,
            )
            .await?;
        ids.orgs.push((key, id_of(&org)?));
    }
    for user in &USERS[1..] {
        let org = user.org.map(|key| ids.org(key).to_owned());
        let id = create_account(
            db,
            clock,
            NewAccount {
                email: user.email,
                full_name: user.full_name,
                role: user.role,
                organization_id: org,
                phone: user.phone,
            },
            DEMO_PASSWORD,
        )
        .await?;
        let token = api.login(user.email).await?;
        ids.users.push((user.email, id, token));
    }

    // The network's today, as the pharmacist's page reads it.
    let today = clock.today(zone);
    let day = |n: u64| today.checked_add_days(Days::new(n)).unwrap_or(today);
    let (gp_id, gp) = ids.user(GP);
    let (_, hospital) = ids.user(HOSPITAL);
    let pharmacy = ids.org("pharmacy");

    // Patient 1: methadone, home after knee surgery; the hospital doctor sends
    // the discharge plan to the GP.
    let p1 = api
        .call(
            Method::POST,
            "/patients",
            gp,
            Some(json!({
                "ins": ins("284072912345"),
                "family_name": "Le Gall",
                "given_names": "Maïwenn",
                "birth_date": "1984-07-12",
                "sex": "female",
                "phone": "06 12 34 56 78"
            })),
            201,
        )
        .await?;
    let p1 = id_of(&p1)?;
    // Patient 2: buprenorphine, acute low back pain.
    let p2 = api
        .call(
            Method::POST,
            "/patients",
            gp,
            Some(json!({
                "ins": ins("179052935012"),
                "family_name": "Morvan",
                "given_names": "Loïc",
                "birth_date": "1979-05-03",
                "sex": "male",
                "phone": "06 98 76 54 32"
            })),
            201,
        )
        .await?;
    let p2 = id_of(&p2)?;

    for (patient, team) in [
        (&p1, &[PHARMACIST, NURSE, HOSPITAL][..]),
        (&p2, &[PHARMACIST, NURSE][..]),
    ] {
        api.call(
            Method::PUT,
            &format!("/patients/{patient}/consent"),
            gp,
            Some(json!({"status": "granted", "note": "oral consent at the practice"})),
            200,
        )
        .await?;
        for member in team {
            let (user_id, _) = ids.user(member);
            api.call(
                Method::POST,
                &format!("/patients/{patient}/care-team"),
                gp,
                Some(json!({"user_id": user_id})),
                201,
            )
            .await?;
        }
    }

    // Their clinical contexts, before the plans, so that the rules see them:
    // Maïwenn's is unremarkable; Loïc's eGFR makes the ibuprofen a warning.
    let ago = |n: u64| today.checked_sub_days(Days::new(n)).unwrap_or(today);
    for (patient, context) in [
        (
            &p1,
            json!({
                "hepatic_impairment": "none",
                "egfr": {"value": 92, "measured_on": ago(20)},
                "qtc_ms": {"value": 430, "measured_on": ago(60)},
                "weight_kg": {"value": 58, "measured_on": ago(3)},
                "pregnancy_weeks": null,
                "breastfeeding": false,
                "alcohol_use_disorder": false,
                "respiratory_disease": [],
                "allergies": [{"class": "nsaid"}]
            }),
        ),
        (
            &p2,
            json!({
                "hepatic_impairment": "mild",
                "egfr": {"value": 55, "measured_on": ago(12)},
                "weight_kg": {"value": 81, "measured_on": ago(12)},
                "alcohol_use_disorder": false,
                "respiratory_disease": ["sleep_apnoea"],
                "allergies": []
            }),
        ),
    ] {
        api.call(
            Method::PUT,
            &format!("/patients/{patient}/clinical-context"),
            gp,
            Some(context),
            201,
        )
        .await?;
    }

    let mut plan1 = methadone_plan(pharmacy, day(0), day(7), day(3));
    plan1["change_summary"] = json!("acute pain after knee surgery: split dose and short morphine");
    api.call(
        Method::PUT,
        &format!("/patients/{p1}/care-plan"),
        gp,
        Some(plan1),
        201,
    )
    .await?;
    let mut plan2 = buprenorphine_plan(pharmacy, day(0), day(10), day(5));
    plan2["change_summary"] = json!("acute low back pain: non-opioid analgesia");
    api.call(
        Method::PUT,
        &format!("/patients/{p2}/care-plan"),
        gp,
        Some(plan2),
        201,
    )
    .await?;

    // The discharge plan keeps the split a little longer and extends the morphine.
    let proposed = methadone_plan(pharmacy, day(0), day(10), day(5));
    api.call(
        Method::POST,
        &format!("/patients/{p1}/handovers"),
        hospital,
        Some(json!({
            "to_user_id": gp_id,
            "summary": "Total knee replacement, uneventful. Pain 5/10 at rest on discharge.",
            "discharge_date": day(0),
            "follow_up": "Physiotherapy three times a week; orthopaedic review in 6 weeks.",
            "proposed_plan": proposed
        })),
        201,
    )
    .await?;

    // The pharmacy hands out the split methadone for the week, and asks the
    // GP to watch Loïc's kidneys on ibuprofen.
    let (_, pharmacist) = ids.user(PHARMACIST);
    api.call(
        Method::POST,
        &format!("/patients/{p1}/dispensations"),
        pharmacist,
        Some(json!({"drug": "methadone", "dose_mg": 80, "days_supply": 7})),
        201,
    )
    .await?;
    api.call(
        Method::POST,
        &format!("/patients/{p2}/interventions"),
        pharmacist,
        Some(json!({
            "plan_version": 1, "line": 1, "problem": "contraindication",
            "proposed_action": "monitor",
            "note": "eGFR 55: creatinine after five days of ibuprofen?"
        })),
        201,
    )
    .await?;

    api.call(
        Method::POST,
        "/consultations",
        gp,
        Some(json!({
            "centre_id": ids.org("pain"),
            "patient_id": p2,
            "priority": "routine",
            "question": "Low back pain for 10 days on buprenorphine 16 mg; paracetamol and ibuprofen \
                         give little relief. Would you split the buprenorphine or add anything?"
        })),
        201,
    )
    .await?;
    Ok(())
}

/// Methadone 60 mg with a temporary 80 mg split in two, paracetamol and
/// short as-needed morphine.
fn methadone_plan(
    pharmacy: &str,
    start: NaiveDate,
    end: NaiveDate,
    morphine_end: NaiveDate,
) -> Value {
    json!({
        "status": "active",
        "omt": {
            "medication": "methadone",
            "daily_dose_mg": 60,
            "doses_per_day": 1,
            "dispensing_pharmacy_id": pharmacy,
            "temporary_adjustment": {
                "daily_dose_mg": 80, "doses_per_day": 2,
                "start": start, "end": end,
                "reason": "post-operative pain"
            }
        },
        "analgesics": [
            {"drug": "paracetamol", "dose_mg": 1000, "times_per_day": 4, "max_daily_mg": 4000,
             "as_needed": false, "start": start, "end": end, "note": ""},
            {"drug": "morphine", "dose_mg": 10, "times_per_day": 4, "max_daily_mg": 40,
             "as_needed": true, "start": start, "end": morphine_end, "note": "after surgery"}
        ],
        "pain_goal": "pain below 4/10 at rest",
        "non_drug_measures": "ice, physiotherapy",
        "review_date": end
    })
}

/// Buprenorphine 16 mg once a day with paracetamol and a short ibuprofen course.
fn buprenorphine_plan(
    pharmacy: &str,
    start: NaiveDate,
    end: NaiveDate,
    nsaid_end: NaiveDate,
) -> Value {
    json!({
        "status": "active",
        "omt": {
            "medication": "buprenorphine",
            "daily_dose_mg": 16,
            "doses_per_day": 1,
            "dispensing_pharmacy_id": pharmacy
        },
        "analgesics": [
            {"drug": "paracetamol", "dose_mg": 1000, "times_per_day": 3, "max_daily_mg": 3000,
             "as_needed": false, "start": start, "end": end, "note": ""},
            {"drug": "ibuprofen", "dose_mg": 400, "times_per_day": 3, "max_daily_mg": 1200,
             "as_needed": false, "start": start, "end": nsaid_end, "note": "with food"}
        ],
        "pain_goal": "walking 30 minutes without stopping",
        "non_drug_measures": "heat, keep active, physiotherapy",
        "review_date": end
    })
}

/// A valid INS from a 12-digit stem (the 13th NIR digit is fixed to 1).
fn ins(stem: &str) -> String {
    let nir = format!("{stem}1");
    let key = crate::domain::ins::key_of(&nir).unwrap_or_default();
    format!("{nir}{key:02}")
}

fn id_of(body: &Value) -> anyhow::Result<String> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .context("the answer has no id")
}

/// A tiny client of the demo server.
struct Api {
    base: String,
    client: awc::Client,
}

impl Api {
    async fn login(&self, email: &str) -> anyhow::Result<String> {
        let body = self
            .call(
                Method::POST,
                "/auth/login",
                "",
                Some(json!({"email": email, "password": DEMO_PASSWORD})),
                200,
            )
            .await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access token")
    }

    /// Calls the API and checks the status, naming the request on failure.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        expected: u16,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let mut res = match body {
            Some(body) => req.send_json(&body).await,
            None => req.send().await,
        }
        .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let bytes = res
            .body()
            .limit(1024 * 1024)
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if res.status().as_u16() != expected {
            bail!("{method} {path} answered {}: {value}", res.status());
        }
        Ok(value)
    }
}
