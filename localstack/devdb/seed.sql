-- Sample employers for the local stack; localstack/samples/*.csv refer to them.
INSERT INTO employer (employer_id, employer_fein, fineos_employer_id, employer_name) VALUES
    ('a0000000-0000-4000-8000-000000000001', '123456789', 1001, 'Acme Manufacturing'),
    ('a0000000-0000-4000-8000-000000000002', '987654321', 1002, 'Bay State Bakery'),
    ('a0000000-0000-4000-8000-000000000003', '045678901', 1003, 'Cape Cod Kayaks'),
    ('a0000000-0000-4000-8000-000000000004', '111222333', NULL, 'Worcester Widgets (not in FINEOS)'),
    ('a0000000-0000-4000-8000-000000000005', '555666777', 1005, 'Pioneer Valley Pediatrics')
ON CONFLICT (employer_id) DO NOTHING;
