//! Readings, by device time, in cursor pages.

use super::*;

/// Query of `GET /v1/readings`.
#[derive(Deserialize, ToSchema, Debug, Default)]
pub struct ReadingsQuery {
    /// Only this device (id).
    pub device: Option<String>,
    /// Only devices of this family (id).
    pub family: Option<String>,
    /// From this device time (ms since the epoch, inclusive).
    pub from: Option<i64>,
    /// Until this device time (ms, exclusive).
    pub to: Option<i64>,
    /// Page size (1..=10000, default 1000).
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
    /// `json` (default, one page with its cursor), `jsonl` or `csv`.
    pub format: Option<String>,
}

/// A reading, as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ReadingView {
    /// Device id.
    pub device: String,
    /// Chip serial.
    pub serial: String,
    /// Device time (ms since the epoch).
    pub time_ms: i64,
    /// Channel.
    pub channel: i64,
    /// Value, hex.
    pub value_hex: String,
    /// When the cloud stored it (s since the epoch).
    pub received: i64,
    /// The device's COSE_Sign1 over the batch this reading came in (hex),
    /// when its family requires signed readings.
    pub signature_hex: Option<String>,
}

/// One page of readings.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ReadingsPage {
    /// The readings, by device time.
    pub readings: Vec<ReadingView>,
    /// Cursor of the next page; absent on the last one.
    pub next: Option<String>,
}

pub(super) fn cursor_of(k: &crate::store::ReadingKey) -> String {
    hex::encode(format!(
        "{}|{}|{}|{}|{}",
        k.time, k.device_id, k.session_id, k.piv, k.idx
    ))
}

pub(super) fn parse_cursor(c: &str) -> Result<crate::store::ReadingKey, ApiError> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            "cursor is not one this API gave".into(),
        )
    };
    let text = String::from_utf8(hex::decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let f: Vec<&str> = text.split('|').collect();
    let [time, device_id, session_id, piv, idx] = f.as_slice() else {
        return Err(bad());
    };
    Ok(crate::store::ReadingKey {
        time: time.parse().map_err(|_| bad())?,
        device_id: (*device_id).to_string(),
        session_id: (*session_id).to_string(),
        piv: piv.parse().map_err(|_| bad())?,
        idx: idx.parse().map_err(|_| bad())?,
    })
}

#[utoipa::path(get, path = "/v1/readings", params(("device" = Option<String>, Query), ("family" = Option<String>, Query), ("from" = Option<i64>, Query), ("to" = Option<i64>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query), ("format" = Option<String>, Query)), responses((status = 200, body = ReadingsPage, description = "json; jsonl and csv carry the next cursor in the X-Next-Cursor header")))]
pub(super) async fn readings(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ReadingsQuery>,
) -> Result<Response, ApiError> {
    let c = caller(&st, &headers, Role::Viewer, "GET /v1/readings").await?;
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "jsonl" | "csv") {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("format {format:?}: use json, jsonl or csv"),
        ));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let rows = st
        .auth
        .registry
        .store
        .readings(
            &c.tenant_id,
            q.device.as_deref(),
            q.family.as_deref(),
            q.from.unwrap_or(0),
            q.to.unwrap_or(i64::MAX),
            after.as_ref(),
            limit,
        )
        .await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == limit)
        .then(|| rows.last().map(|r| cursor_of(&r.key)))
        .flatten();
    let views: Vec<ReadingView> = rows
        .into_iter()
        .map(|r| ReadingView {
            device: r.key.device_id,
            serial: r.serial,
            time_ms: r.key.time,
            channel: r.channel,
            value_hex: hex::encode(r.value),
            received: r.received,
            signature_hex: r.signature.map(hex::encode),
        })
        .collect();
    let with_cursor = |mut rsp: Response| {
        if let Some(n) = &next {
            if let Ok(v) = axum::http::HeaderValue::from_str(n) {
                rsp.headers_mut().insert("x-next-cursor", v);
            }
        }
        rsp
    };
    Ok(match format {
        "jsonl" => {
            let mut body = String::new();
            for v in &views {
                body.push_str(&serde_json::to_string(v).unwrap_or_default());
                body.push('\n');
            }
            with_cursor(([("content-type", "application/x-ndjson")], body).into_response())
        }
        "csv" => {
            let mut body = String::from("device,serial,time_ms,channel,value_hex,received\n");
            for v in &views {
                body.push_str(&format!(
                    "{},{},{},{},{},{}\n",
                    v.device, v.serial, v.time_ms, v.channel, v.value_hex, v.received
                ));
            }
            with_cursor(([("content-type", "text/csv")], body).into_response())
        }
        _ => Json(ReadingsPage {
            readings: views,
            next,
        })
        .into_response(),
    })
}
