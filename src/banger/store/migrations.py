"""Forward-only, numbered schema migrations. Never edit one that has shipped: add a new one."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE vms (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL,
            image TEXT NOT NULL,
            kernel TEXT NOT NULL,
            vcpu INTEGER NOT NULL CHECK (vcpu > 0),
            memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
            disk_mib INTEGER NOT NULL CHECK (disk_mib > 0),
            ip TEXT,
            last_error TEXT,
            spec_json TEXT NOT NULL DEFAULT '{}',
            workspace_json TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE images (
            name TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            distro TEXT NOT NULL DEFAULT '',
            arch TEXT NOT NULL DEFAULT 'x86_64',
            sha256 TEXT NOT NULL DEFAULT '',
            size_bytes INTEGER NOT NULL DEFAULT 0,
            path TEXT NOT NULL,
            manifest_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE kernels (
            name TEXT PRIMARY KEY,
            version TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL,
            manifest_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE operations (
            id TEXT PRIMARY KEY,
            method TEXT NOT NULL,
            state TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            error TEXT
        );
        CREATE INDEX operations_started ON operations (started_at);
        """,
    ),
    (
        2,
        "vm networking: mode, MAC, NAT, published ports",
        """
        ALTER TABLE vms ADD COLUMN net_mode TEXT;
        ALTER TABLE vms ADD COLUMN mac TEXT;
        ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE vms ADD COLUMN publish_json TEXT NOT NULL DEFAULT '[]';
        """,
    ),
    (
        3,
        "drop what nothing reads: vms.spec_json, the images and kernels tables",
        # Image and kernel manifests on disk are the truth; these tables were only ever written.
        """
        ALTER TABLE vms DROP COLUMN spec_json;
        DROP TABLE images;
        DROP TABLE kernels;
        """,
    ),
    (
        4,
        "vm owner: the `vm run --rm` client whose exit deletes the VM",
        """
        ALTER TABLE vms ADD COLUMN owner_pid INTEGER;
        ALTER TABLE vms ADD COLUMN owner_start TEXT;
        """,
    ),
    (
        5,
        "warm pool: how many paused clones to keep per VM shape",
        """
        CREATE TABLE pool (
            image TEXT NOT NULL,
            vcpu INTEGER NOT NULL,
            memory_mib INTEGER NOT NULL,
            net_mode TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (image, vcpu, memory_mib, net_mode)
        );
        """,
    ),
    (
        6,
        "egress rules: what a user-mode VM may connect to (--allow)",
        """
        ALTER TABLE vms ADD COLUMN egress_json TEXT NOT NULL DEFAULT '[]';
        """,
    ),
]
