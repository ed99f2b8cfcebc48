pub mod deb;
pub mod dpkg;
