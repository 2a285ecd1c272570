[('system', 'product', 'vendor', 'Red Hat'),
 ('system', 'product', 'name', 'edeploy_test_vm ()'),
 ('system', 'product', 'serial', 'ABC-123'),
 ('network', 'eth0', 'serial', '52:54:12:34:00:03'),
 ('cpu', 'logical', 'number', '4'),
 ('cpu', 'logical_0', 'bogomips', '4800.12'),
 ('disk', 'vda', 'size', '20')]
