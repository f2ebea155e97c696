-- Drafts: bundles an author uploaded to test before publishing them. Only their author may
-- deploy them: `draft_tests` holds the draft an author armed for their next lease opened without
-- a template, and `lease_drafts` the draft a lease's VM was given (kept, so that the VM renders
-- the same bundle when it is created again).
CREATE TABLE template_drafts (
    author TEXT NOT NULL,
    cid TEXT NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (author, cid)
);
CREATE TABLE draft_tests (
    tenant TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    armed_at BIGINT NOT NULL
);
CREATE TABLE lease_drafts (
    lease_id TEXT PRIMARY KEY,
    cid TEXT NOT NULL
);
