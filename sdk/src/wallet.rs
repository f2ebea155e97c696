//! Loading the deployer's key: from `DECLOUD_PRIVATE_KEY`, or from an encrypted keystore whose
//! password comes from `DECLOUD_KEYSTORE_PASSWORD` or a prompt. Never from a command-line flag,
//! where it would land in shell history and process listings.

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;

/// Environment variable holding a hex private key.
pub const PRIVATE_KEY_ENV: &str = "DECLOUD_PRIVATE_KEY";
/// Environment variable holding the keystore password.
pub const KEYSTORE_PASSWORD_ENV: &str = "DECLOUD_KEYSTORE_PASSWORD";

/// Errors loading a key.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Neither a keystore nor the private key variable was given.
    #[error("no key: set {PRIVATE_KEY_ENV} or pass --keystore PATH")]
    NoKey,
    /// The private key variable does not hold a valid key.
    #[error("{PRIVATE_KEY_ENV} is not a valid hex private key")]
    InvalidPrivateKey,
    /// The keystore could not be decrypted.
    #[error("cannot decrypt keystore {path}: {message}")]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The password could not be read from the terminal.
    #[error("cannot read the keystore password (set {KEYSTORE_PASSWORD_ENV}): {0}")]
    Prompt(std::io::Error),
}

/// Loads the signer: the keystore when given, else the private key from the environment.
pub fn load_signer(keystore: Option<&Path>) -> Result<PrivateKeySigner, WalletError> {
    load_signer_with(
        keystore,
        |name| std::env::var(name).ok(),
        || rpassword::prompt_password("keystore password: ").map_err(WalletError::Prompt),
    )
}

/// [`load_signer`] with explicit environment and prompt (for tests).
pub fn load_signer_with(
    keystore: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
    prompt: impl FnOnce() -> Result<String, WalletError>,
) -> Result<PrivateKeySigner, WalletError> {
    if let Some(path) = keystore {
        let password = match env(KEYSTORE_PASSWORD_ENV) {
            Some(password) => password,
            None => prompt()?,
        };
        return PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
            WalletError::Keystore {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        });
    }
    let key = env(PRIVATE_KEY_ENV)
        .filter(|k| !k.trim().is_empty())
        .ok_or(WalletError::NoKey)?;
    key.trim()
        .parse()
        .map_err(|_| WalletError::InvalidPrivateKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn private_key_from_env() {
        let signer = load_signer_with(
            None,
            |n| (n == PRIVATE_KEY_ENV).then(|| KEY.into()),
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(
            signer.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert!(matches!(
            load_signer_with(None, |_| None, || unreachable!()),
            Err(WalletError::NoKey)
        ));
        assert!(matches!(
            load_signer_with(None, |_| Some("0x12".into()), || unreachable!()),
            Err(WalletError::InvalidPrivateKey)
        ));
    }

    #[test]
    fn keystore_with_env_password_or_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let key: PrivateKeySigner = KEY.parse().unwrap();
        let mut rng = alloy::signers::k256::elliptic_curve::rand_core::OsRng;
        let (_, name) = PrivateKeySigner::encrypt_keystore(
            dir.path(),
            &mut rng,
            key.to_bytes(),
            "hunter2",
            None,
        )
        .unwrap();
        let path = dir.path().join(name);
        let from_env = load_signer_with(
            Some(&path),
            |n| (n == KEYSTORE_PASSWORD_ENV).then(|| "hunter2".into()),
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(from_env.address(), key.address());
        let prompted = load_signer_with(Some(&path), |_| None, || Ok("hunter2".into())).unwrap();
        assert_eq!(prompted.address(), key.address());
        let wrong = load_signer_with(Some(&path), |_| None, || Ok("wrong".into())).unwrap_err();
        assert!(matches!(wrong, WalletError::Keystore { .. }), "{wrong}");
    }
}
