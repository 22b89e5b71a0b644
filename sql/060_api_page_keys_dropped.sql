-- Page tokens no longer store long sort keys: a token whose key does not fit
-- names the page's last rows instead, and the API re-reads their keys from
-- images (mirror/api/page_keys.py). A List or blob page writes nothing.
-- Tokens that named a stored key answer 400 "invalid pageToken: expired".
DROP TABLE IF EXISTS api_page_keys;
