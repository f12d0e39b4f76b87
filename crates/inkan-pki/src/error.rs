/// A PKI failure. Input errors name the problem; signer errors keep their
/// source.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// An input (certificate, key, CRL, manifest) does not parse.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A certificate meant to be a CA is not one (no basicConstraints CA, or
    /// no keyCertSign).
    #[error("certificate {subject:?} is not a CA certificate: {reason}")]
    NotACa {
        /// Its subject.
        subject: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The issuing CA has expired or is not yet valid.
    #[error("CA certificate {subject:?} is not valid now (valid {not_before} to {not_after})")]
    CaNotValidNow {
        /// Its subject.
        subject: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The signer's key does not match the CA certificate.
    #[error("the signing key does not match the CA certificate {subject:?}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The passphrase did not decrypt the key file (or the file is damaged).
    #[error("cannot decrypt the key file (wrong passphrase?)")]
    Decrypt,
    /// A PKCS#11 token operation failed.
    #[error("PKCS#11: {0}")]
    Token(String),
    /// A signature did not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(&'static str),
    /// Encoding failed (a bug, or values out of range).
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl PkiError {
    pub(crate) fn malformed(what: &'static str, e: impl std::fmt::Display) -> PkiError {
        PkiError::Malformed {
            what,
            reason: e.to_string(),
        }
    }

    pub(crate) fn encode(what: &'static str, e: impl std::fmt::Display) -> PkiError {
        PkiError::Encode {
            what,
            reason: e.to_string(),
        }
    }
}
