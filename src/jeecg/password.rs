//! JeecgBoot's password hash, so that users created by a pull can log in to JeecgBoot:
//! PBEWithMD5AndDES as JeecgBoot's `PasswordUtil` does it — key and IV from MD5 iterated 1000
//! times over (password bytes + the 8-character salt), DES-CBC with PKCS#5 padding over the
//! UTF-8 username, stored as lower-case hex.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use md5::{Digest, Md5};
use rand::distr::{Alphanumeric, SampleString};

type DesCbcEnc = cbc::Encryptor<des::Des>;

/// MD5 rounds of PBEWithMD5AndDES as JeecgBoot configures it.
const ITERATIONS: usize = 1000;
/// Length of JeecgBoot's salt.
pub const SALT_LEN: usize = 8;

/// The stored hash of `password` for `username` with `salt`.
pub fn hash(username: &str, password: &str, salt: &str) -> String {
    Derived::new(password, salt).hash(username)
}

/// The key and IV PBEWithMD5AndDES derives from a password and a salt (1,000 MD5 rounds, the
/// costly part), ready to hash any number of usernames: users created together with one
/// initial password share a salt, so the rounds run once for them (JeecgBoot gives a user a
/// fresh salt when the password is changed).
pub struct Derived {
    key_iv: [u8; 16],
}

impl Derived {
    /// Runs the rounds.
    pub fn new(password: &str, salt: &str) -> Self {
        let mut digest = Md5::new()
            .chain_update(password.as_bytes())
            .chain_update(salt.as_bytes())
            .finalize();
        for _ in 1..ITERATIONS {
            digest = Md5::digest(digest);
        }
        Self {
            key_iv: digest.into(),
        }
    }

    /// The stored hash for `username`.
    pub fn hash(&self, username: &str) -> String {
        let (key, iv) = self.key_iv.split_at(8);
        let cipher = DesCbcEnc::new_from_slices(key, iv)
            .unwrap_or_else(|_| unreachable!("MD5 gives 16 bytes: 8 key, 8 IV"));
        let message = username.as_bytes();
        let mut buffer = vec![0u8; (message.len() / 8 + 1) * 8];
        buffer[..message.len()].copy_from_slice(message);
        match cipher.encrypt_padded_mut::<Pkcs7>(&mut buffer, message.len()) {
            Ok(ciphertext) => hex::encode(ciphertext),
            Err(_) => unreachable!("the buffer holds a whole padding block"),
        }
    }
}

/// A fresh random salt of JeecgBoot's shape (8 letters and digits).
pub fn new_salt() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), SALT_LEN)
}

/// Whether `password` matches the stored hash, as JeecgBoot's login checks it.
pub fn verify(username: &str, password: &str, salt: &str, stored: &str) -> bool {
    hash(username, password, salt).eq_ignore_ascii_case(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ../shared/jeecgboot/README.md's vectors, all with password 123456.
    #[test]
    fn jeecgboot_vectors() {
        assert_eq!(hash("admin", "123456", "RCGTeGiH"), "cb362cfeefbf3d8d");
        assert_eq!(hash("jeecg", "123456", "mIgiYJow"), "eee378a1258530cb");
        assert_eq!(hash("ceshi", "123456", "AF4vhXUz"), "a9932bb12d2cbc5a");
    }

    #[test]
    fn salts_are_fresh_and_verify_round_trips() {
        let salt = new_salt();
        assert_eq!(salt.len(), SALT_LEN);
        assert_ne!(salt, new_salt());
        let stored = hash("zhangsan_long_username", "s3cret!", &salt);
        assert!(verify("zhangsan_long_username", "s3cret!", &salt, &stored));
        assert!(!verify("zhangsan_long_username", "123456", &salt, &stored));
        // One derivation hashes many usernames exactly as one each would.
        let derived = Derived::new("123456", "RCGTeGiH");
        assert_eq!(derived.hash("admin"), "cb362cfeefbf3d8d");
        assert_eq!(
            derived.hash("zhangsan"),
            hash("zhangsan", "123456", "RCGTeGiH")
        );
    }
}
