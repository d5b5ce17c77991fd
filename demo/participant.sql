-- demo/participant.sql — run by demo/run-demo on each participant (a and b)
-- before demo/demo.sql, quietly.  :node is 'a' or 'b'.
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL,
                       balance numeric NOT NULL CHECK (balance >= 0));
INSERT INTO accounts VALUES (1, 'alice@' || :'node', 100), (2, 'bob@' || :'node', 100);
