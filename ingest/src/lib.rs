//! RTMP ingest: accepts publishers, authorises them, and feeds their media to the packager.
pub mod rtmp;
