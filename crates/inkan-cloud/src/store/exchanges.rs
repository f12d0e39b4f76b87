//! EDHOC exchanges waiting for message_3: stored under a cap, each taken
//! at most once, batched many requests per transaction.

#[allow(unused_imports)]
use super::*;

/// Inserts an exchange unless the cap of live ones is reached (one
/// statement; expired ones are purged only when the cap is hit).
async fn put_exchange_on(
    pool: &AnyPool,
    c_r: &str,
    state: &[u8],
    peer: &str,
    expires: i64,
    cap: i64,
) -> Result<bool, StoreError> {
    let t = now();
    // One statement in the common case: insert unless the cap of live
    // exchanges is reached. Expired ones are purged only when the cap
    // is hit, then the insert is tried once more.
    for attempt in 0..2 {
        let n = sqlx::query(
            "INSERT INTO exchanges (c_r, state, peer, expires) SELECT $1, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM exchanges WHERE expires >= $5) < $6",
        )
        .bind(c_r)
        .bind(state.to_vec())
        .bind(peer)
        .bind(expires)
        .bind(t)
        .bind(cap)
        .execute(pool)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(true);
        }
        if attempt == 0 {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(pool)
                .await?;
        }
    }
    Ok(false)
}

/// Deletes an exchange and returns its state and expiry (at most once).
async fn take_exchange_on(pool: &AnyPool, c_r: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let r = sqlx::query("DELETE FROM exchanges WHERE c_r = $1 RETURNING state, expires")
        .bind(c_r)
        .fetch_optional(pool)
        .await?;
    match r {
        None => Ok(None),
        Some(r) => Ok(Some((r.try_get("state")?, r.try_get("expires")?))),
    }
}

/// A request to the exchange batcher.
#[derive(Debug)]
pub(super) enum ExchangeJob {
    Put {
        c_r: String,
        state: Vec<u8>,
        peer: String,
        expires: i64,
        cap: i64,
        done: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
    Take {
        c_r: String,
        done: tokio::sync::oneshot::Sender<Result<Taken, String>>,
    },
}

/// Stores and takes pending EDHOC exchanges many requests at a time: the
/// puts of a batch are one multi-row INSERT under the cap, its takes one
/// DELETE … RETURNING, all in one transaction, each caller answered after
/// the commit. An exchange is taken at most once (the first request naming
/// a C_R in a batch gets it).
pub(super) async fn exchange_batcher(
    pool: AnyPool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ExchangeJob>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        match exchange_batch(&pool, &jobs).await {
            Ok((puts, takes)) => {
                let (mut p, mut t) = (puts.into_iter(), takes.into_iter());
                for j in jobs {
                    match j {
                        ExchangeJob::Put { done, .. } => {
                            let _ = done.send(Ok(p.next().unwrap_or(false)));
                        }
                        ExchangeJob::Take { done, .. } => {
                            let _ = done.send(Ok(t.next().flatten()));
                        }
                    }
                }
            }
            // Each on its own, so one failure does not fail the others.
            Err(_) => {
                for j in jobs {
                    match j {
                        ExchangeJob::Put {
                            c_r,
                            state,
                            peer,
                            expires,
                            cap,
                            done,
                        } => {
                            let r = put_exchange_on(&pool, &c_r, &state, &peer, expires, cap)
                                .await
                                .map_err(|e| e.to_string());
                            let _ = done.send(r);
                        }
                        ExchangeJob::Take { c_r, done } => {
                            let r = take_exchange_on(&pool, &c_r)
                                .await
                                .map_err(|e| e.to_string());
                            let _ = done.send(r);
                        }
                    }
                }
            }
        }
    }
}

/// One batch in one transaction: the puts' verdicts and the takes' results,
/// each in job order.
async fn exchange_batch(
    pool: &AnyPool,
    jobs: &[ExchangeJob],
) -> Result<(Vec<bool>, Vec<Taken>), StoreError> {
    let t = now();
    let mut tx = pool.begin().await?;
    let puts: Vec<_> = jobs
        .iter()
        .filter_map(|j| match j {
            ExchangeJob::Put {
                c_r,
                state,
                peer,
                expires,
                cap,
                ..
            } => Some((c_r, state, peer, *expires, *cap)),
            ExchangeJob::Take { .. } => None,
        })
        .collect();
    let mut verdicts = Vec::with_capacity(puts.len());
    if !puts.is_empty() {
        let live: i64 = sqlx::query("SELECT COUNT(*) AS n FROM exchanges WHERE expires >= $1")
            .bind(t)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let cap = puts.first().map(|p| p.4).unwrap_or(0);
        let room = usize::try_from((cap - live).max(0))
            .unwrap_or(0)
            .min(puts.len());
        let mut at = 0;
        for size in fixed_chunks(room) {
            let sql = multi_insert(
                "INSERT INTO exchanges (c_r, state, peer, expires) VALUES ",
                4,
                size,
            );
            let mut q = sqlx::query(&sql);
            for (c_r, state, peer, expires, _) in &puts[at..at + size] {
                q = q
                    .bind(*c_r)
                    .bind((*state).clone())
                    .bind(*peer)
                    .bind(*expires);
            }
            q.execute(&mut *tx).await?;
            at += size;
        }
        verdicts.extend((0..puts.len()).map(|i| i < room));
        if room < puts.len() {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
    }
    let wanted: Vec<&String> = jobs
        .iter()
        .filter_map(|j| match j {
            ExchangeJob::Take { c_r, .. } => Some(c_r),
            ExchangeJob::Put { .. } => None,
        })
        .collect();
    let mut found: std::collections::HashMap<String, (Vec<u8>, i64)> =
        std::collections::HashMap::new();
    let mut distinct: Vec<&String> = Vec::new();
    for c in &wanted {
        if !distinct.contains(c) {
            distinct.push(c);
        }
    }
    let mut at = 0;
    for size in fixed_chunks(distinct.len()) {
        let marks: Vec<String> = (1..=size).map(|k| format!("${k}")).collect();
        let sql = format!(
            "DELETE FROM exchanges WHERE c_r IN ({}) RETURNING c_r, state, expires",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for c in &distinct[at..at + size] {
            q = q.bind(c.as_str());
        }
        for r in q.fetch_all(&mut *tx).await? {
            found.insert(
                r.try_get("c_r")?,
                (r.try_get("state")?, r.try_get("expires")?),
            );
        }
        at += size;
    }
    tx.commit().await?;
    // The first request naming a C_R gets it; a duplicate gets nothing.
    let results = wanted.iter().map(|c| found.remove(c.as_str())).collect();
    Ok((verdicts, results))
}

impl Store {
    /// Records a pending exchange, refusing when `cap` are already pending
    /// (expired ones are purged first).
    pub async fn put_exchange(
        &self,
        c_r: &str,
        state: &[u8],
        peer: &str,
        ttl: i64,
        cap: i64,
    ) -> Result<bool, StoreError> {
        let t = now();
        if self.exchanges_stored.fetch_add(1, Ordering::Relaxed) % 512 == 511 {
            sqlx::query("DELETE FROM exchanges WHERE expires < $1")
                .bind(t)
                .execute(&self.pool)
                .await?;
        }
        if let Some(b) = &self.exchanges {
            let (done, rx) = tokio::sync::oneshot::channel();
            let job = ExchangeJob::Put {
                c_r: c_r.to_string(),
                state: state.to_vec(),
                peer: peer.to_string(),
                expires: t + ttl,
                cap,
                done,
            };
            if b.send(job).is_ok() {
                if let Ok(r) = rx.await {
                    return r.map_err(StoreError::Append);
                }
            }
        }
        self.put_exchange_direct(c_r, state, peer, t + ttl, cap)
            .await
    }

    async fn put_exchange_direct(
        &self,
        c_r: &str,
        state: &[u8],
        peer: &str,
        expires: i64,
        cap: i64,
    ) -> Result<bool, StoreError> {
        put_exchange_on(&self.pool, c_r, state, peer, expires, cap).await
    }

    /// Takes a pending exchange (deleting it: message_3 is processed once).
    /// Returns None if unknown; the flag says whether it is still live.
    pub async fn take_exchange(&self, c_r: &str) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        if let Some(b) = &self.exchanges {
            let (done, rx) = tokio::sync::oneshot::channel();
            if b.send(ExchangeJob::Take {
                c_r: c_r.to_string(),
                done,
            })
            .is_ok()
            {
                if let Ok(r) = rx.await {
                    return r
                        .map(|o| o.map(|(state, expires)| (state, expires >= now())))
                        .map_err(StoreError::Append);
                }
            }
        }
        Ok(take_exchange_on(&self.pool, c_r)
            .await?
            .map(|(state, expires)| (state, expires >= now())))
    }

    /// Pending exchanges.
    pub async fn pending_exchanges(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM exchanges")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
