-- The sample organisation (written for the project): two companies with departments and
-- posts, seven people (one frozen, one deleted), a position. One statement a line, run in
-- order by `Store::load_sample_org` on a database with JeecgBoot's tables (`dingsync demo`
-- loads it; a test may too). Plain JeecgBoot rows: no dingsync marker, so the change log
-- records them as JeecgBoot's own writes.
INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag, tenant_id) VALUES ('d-xh', '', '星河科技', 1, '1', 'A01', '0', 0), ('d-xh-rd', 'd-xh', '研发部', 1, '2', 'A01A01', '0', 0), ('d-xh-rd-fe', 'd-xh-rd', '前端组', 1, '2', 'A01A01A01', '0', 0), ('d-xh-fin', 'd-xh', '财务部', 2, '2', 'A01A02', '0', 0), ('d-xh-rd-mgr', 'd-xh-rd', '研发经理', 0, '3', 'A01A01A02', '0', 0), ('d-yf', '', '云帆咨询', 2, '1', 'A02', '0', 0), ('d-yf-mkt', 'd-yf', '市场部', 1, '2', 'A02A01', '0', 0), ('d-yf-rd', 'd-yf', '研发部', 2, '2', 'A02A02', '0', 0)
INSERT INTO sys_user (id, username, realname, phone, email, work_no, status, del_flag) VALUES ('u-admin', 'admin', '管理员', '13900000001', 'admin@example.com', 'E0001', 1, 0), ('u-li', 'lihua', '李华', '13900000002', 'lihua@example.com', 'E0002', 1, 0), ('u-wang', 'wangfang', '王芳', '13900000003', NULL, 'E0003', 1, 0), ('u-zhao', 'zhaolei', '赵磊', '13900000004', NULL, 'E0004', 2, 0), ('u-chen', 'chenjing', '陈静', '13900000005', NULL, 'E0005', 1, 0), ('u-sun', 'sunyang', '孙阳', '13900000006', NULL, 'E0006', 1, 0), ('u-gone', 'zhoujie', '周杰', '13900000007', NULL, 'E0007', 1, 1)
INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u-li', 'd-xh-rd'), ('m2', 'u-li', 'd-yf-rd'), ('m3', 'u-wang', 'd-xh-fin'), ('m4', 'u-zhao', 'd-xh-rd-fe'), ('m5', 'u-chen', 'd-yf-mkt'), ('m6', 'u-sun', 'd-xh-rd-mgr')
INSERT INTO sys_position (id, code, name) VALUES ('p1', 'dev', '工程师')
INSERT INTO sys_user_position (id, user_id, position_id) VALUES ('up1', 'u-li', 'p1'), ('up2', 'u-zhao', 'p1')
