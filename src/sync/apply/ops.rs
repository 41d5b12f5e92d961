//! One method per kind of operation: a push's DingTalk calls and a pull's local writes, each
//! recording what it did as it succeeds. [`Run::execute`] only dispatches; batching and
//! ordering live in the parent module.

use crate::dingtalk::types::{DeptCreate, DeptUpdate, UserCreate, UserUpdate};
use crate::dingtalk::ErrorKind;
use crate::jeecg::{Link, NewUser};

use super::super::model::{
    entity, mask_mobile, sorted, DeptBase, Op, UserBase, UserFields, ROOT_DEPT,
};
use super::super::written::Counted;
use super::{json, record_dept, write_back_source, ApplyCtx, EntityError, Run};

/// The error of a method handed an operation of another kind (the dispatch prevents it).
fn not_a(kind: &'static str) -> EntityError {
    EntityError::NotA(kind)
}

/// DingTalk's create of user `userid` with `mobile`, `fields` and its resolved `depts`.
fn user_create(userid: &str, mobile: &str, fields: &UserFields, depts: Vec<i64>) -> UserCreate {
    UserCreate {
        userid: userid.to_string(),
        name: fields.name.clone().unwrap_or_default(),
        mobile: mobile.to_string(),
        telephone: fields.telephone.clone(),
        job_number: fields.job_number.clone(),
        title: fields.title.clone(),
        email: fields.email.clone(),
        dept_id_list: depts,
    }
}

impl Run {
    /// Executes one operation.
    pub(super) async fn execute(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        match op {
            Op::CreateDept { .. } => self.create_dept(ctx, op).await,
            Op::UpdateDept { .. } => self.update_dept(ctx, op).await,
            Op::LinkDept {
                local_id,
                dept_id,
                base,
            } => {
                self.record_dept(ctx, local_id, *dept_id, base, Counted::Nothing)
                    .await;
                Ok(())
            }
            Op::MoveMembersOut { userid, keep } => {
                let update = UserUpdate {
                    userid: userid.clone(),
                    dept_id_list: Some(keep.clone()),
                    ..UserUpdate::default()
                };
                ctx.client.user_update(&update).await?;
                Ok(())
            }
            Op::DeleteDept { dept_id, .. } => self.delete_dept(ctx, *dept_id).await,
            Op::CreateUser { .. } => self.create_user(ctx, op).await,
            Op::UpdateUser {
                local_id,
                userid,
                fields,
                ..
            } => self.update_user(ctx, local_id, userid, fields).await,
            Op::LinkUser { .. } => self.link_user(ctx, op).await,
            Op::DeleteUser { local_id, userid } => self.delete_user(ctx, local_id, userid).await,
            Op::CreateLocalDept { dept_id, .. } => {
                let local_id = self.insert_local_dept(ctx, op).await?;
                write_back_source(ctx.client, *dept_id, local_id).await?;
                self.state().summary.created += 1;
                Ok(())
            }
            Op::UpdateLocalDept { .. } => self.update_local_dept(ctx, op).await,
            Op::CreateLocalUser { .. } => self.create_local_user(ctx, op).await,
            Op::UpdateLocalUser { .. } => self.update_local_user_op(ctx, op).await,
            Op::Fail { .. } | Op::Warn { .. } | Op::Merge { .. } => Ok(()),
        }
    }

    /// A `CreateDept`: created under its parent, or adopted when DingTalk already has it
    /// there (created meanwhile, or by a call whose answer was lost) and no other local
    /// department holds it.
    async fn create_dept(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::CreateDept {
            local_id,
            name,
            parent,
            order,
        } = op
        else {
            return Err(not_a("a department to create"));
        };
        let parent_id = self.resolve(parent)?;
        let request = DeptCreate {
            name: name.clone(),
            parent_id,
            order: Some(*order),
            source_identifier: Some(local_id.clone()),
        };
        let dept_id = match ctx.client.dept_create(&request).await {
            Ok(id) => id,
            Err(error) if error.kind == ErrorKind::DeptNameExists => self
                .adopt_dept(ctx, local_id, parent_id, name, *order)
                .await?
                .ok_or(error)?,
            Err(error) => return Err(error.into()),
        };
        self.state().created_depts.insert(local_id.clone(), dept_id);
        let base = DeptBase {
            name: name.clone(),
            parent: parent_id,
            order: *order,
        };
        self.record_dept(ctx, local_id, dept_id, &base, Counted::Created)
            .await;
        Ok(())
    }

    /// The DingTalk department named `name` under `parent_id` (created meanwhile, or by a
    /// call whose answer was lost), given `local_id` as its source: its id, `None` when there
    /// is none. Refused when another local department holds it.
    async fn adopt_dept(
        &self,
        ctx: &ApplyCtx<'_>,
        local_id: &str,
        parent_id: i64,
        name: &str,
        order: i64,
    ) -> Result<Option<i64>, EntityError> {
        let siblings = ctx.client.dept_listsub(parent_id).await?;
        let Some(found) = siblings.into_iter().find(|d| d.name == name) else {
            return Ok(None);
        };
        // The holder may be a record of this run not written yet.
        self.flush(ctx, true).await;
        let holder = ctx.store.dept_holder(ctx.tenant, found.dept_id).await?;
        if let Some(holder) = holder.filter(|h| h != local_id) {
            return Err(EntityError::NameHeld {
                dept_id: found.dept_id,
                name: name.to_string(),
                holder,
            });
        }
        let update = DeptUpdate {
            dept_id: found.dept_id,
            order: Some(order),
            source_identifier: Some(local_id.to_string()),
            ..DeptUpdate::default()
        };
        ctx.client.dept_update(&update).await?;
        Ok(Some(found.dept_id))
    }

    /// An `UpdateDept`: the fields that differ sent, the base recorded with the parent's
    /// DingTalk id (a parent created in this run is known by it now).
    async fn update_dept(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::UpdateDept {
            local_id,
            dept_id,
            name,
            parent,
            order,
            source_identifier,
            base,
            ..
        } = op
        else {
            return Err(not_a("a department to update"));
        };
        let parent_id = parent.as_ref().map(|p| self.resolve(p)).transpose()?;
        let update = DeptUpdate {
            dept_id: *dept_id,
            name: name.clone(),
            parent_id,
            order: *order,
            source_identifier: source_identifier.clone(),
        };
        ctx.client.dept_update(&update).await?;
        let base = DeptBase {
            parent: parent_id.unwrap_or(base.parent),
            ..base.clone()
        };
        self.record_dept(ctx, local_id, *dept_id, &base, Counted::Updated)
            .await;
        Ok(())
    }

    /// A `DeleteDept`: deleted in DingTalk (gone already is fine) and its snapshot forgotten.
    async fn delete_dept(&self, ctx: &ApplyCtx<'_>, dept_id: i64) -> Result<(), EntityError> {
        // A record of this run naming it is written first, not after its forgetting.
        self.flush(ctx, true).await;
        match ctx.client.dept_delete(dept_id).await {
            Ok(()) => {}
            Err(error) if error.kind == ErrorKind::DeptNotFound => {}
            Err(error) => return Err(error.into()),
        }
        // The daemon's deletion guard counts snapshots of departments whose local row is
        // gone; this one is gone from DingTalk too.
        ctx.store
            .forget_ding_id(ctx.tenant, entity::DEPT, &dept_id.to_string())
            .await?;
        self.state().summary.deleted += 1;
        Ok(())
    }

    /// A `CreateUser`: created in DingTalk and linked. A userid DingTalk already has becomes
    /// an update; a mobile it already has, a link to that user when nobody claims them.
    async fn create_user(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::CreateUser {
            local_id,
            userid,
            mobile,
            fields,
            base,
        } = op
        else {
            return Err(not_a("a user to create"));
        };
        let depts = fields
            .depts
            .as_ref()
            .map(|d| self.resolve_list(d))
            .unwrap_or_else(|| vec![ROOT_DEPT]);
        let request = user_create(userid, mobile, fields, depts.clone());
        let counted = match ctx.client.user_create(&request).await {
            Ok(_) => Counted::Created,
            Err(error) if error.kind == ErrorKind::UserIdExists => {
                // The userid exists (a create whose answer was lost, or a user outside the
                // listed departments): it becomes an update.
                ctx.client
                    .user_update(&self.user_update(userid, fields))
                    .await?;
                Counted::Updated
            }
            Err(error) if error.kind == ErrorKind::MobileExists => {
                return self
                    .link_by_mobile(ctx, local_id, mobile, fields.name.as_deref())
                    .await;
            }
            Err(error) => return Err(error.into()),
        };
        let link = Link {
            user_id: local_id.to_string(),
            userid: userid.to_string(),
            unionid: None,
            tenant_id: ctx.tenant,
        };
        let base = UserBase {
            depts: sorted(depts),
            ..base.clone()
        };
        let realname = fields.name.clone().unwrap_or_default();
        self.record_link(ctx, link, realname, base, counted).await;
        Ok(())
    }

    /// DingTalk already has a user with this mobile (60104) that the plan could not see: an
    /// app without the mobile permission lists users without mobiles, so the same person
    /// looks like nobody. `getbymobile` (a permission of its own) names them; when no local
    /// user of this tenant claims that userid, the two are linked, with DingTalk's values as
    /// the base (the next run merges the fields); otherwise the create fails with the reason.
    async fn link_by_mobile(
        &self,
        ctx: &ApplyCtx<'_>,
        local_id: &str,
        mobile: &str,
        realname: Option<&str>,
    ) -> Result<(), EntityError> {
        let exists = || EntityError::MobileTaken(mask_mobile(mobile));
        let Some(userid) = ctx.client.user_by_mobile(mobile).await? else {
            return Err(exists());
        };
        // A claimer may be a record of this run not written yet.
        self.flush(ctx, true).await;
        let linked = ctx.store.links_to(ctx.tenant, &[userid.as_str()]).await?;
        let snapshots = ctx
            .store
            .snapshots_to(ctx.tenant, entity::USER, &[userid.as_str()])
            .await?;
        let claimed = linked
            .iter()
            .map(|l| l.user_id.as_str())
            .chain(snapshots.iter().map(|s| s.local_id.as_str()))
            .find(|id| *id != local_id);
        if let Some(other) = claimed {
            return Err(EntityError::MobileLinked {
                masked: mask_mobile(mobile),
                userid,
                other: other.to_string(),
            });
        }
        let person = ctx.client.user_get(&userid).await?;
        let link = Link {
            user_id: local_id.to_string(),
            userid: userid.clone(),
            unionid: Some(person.unionid.clone()).filter(|u| !u.is_empty()),
            tenant_id: ctx.tenant,
        };
        let realname = realname.unwrap_or_default().to_string();
        self.record_link(ctx, link, realname, UserBase::of(&person), Counted::Updated)
            .await;
        tracing::info!(event = "sync.user.linked_by_mobile", tenant = ctx.tenant, user = %local_id, userid = %userid, "linked to the DingTalk user with the same mobile (the app cannot see mobiles in lists)");
        Ok(())
    }

    /// An `UpdateUser`: the fields that differ sent; the record is the `LinkUser` after it.
    async fn update_user(
        &self,
        ctx: &ApplyCtx<'_>,
        local_id: &str,
        userid: &str,
        fields: &UserFields,
    ) -> Result<(), EntityError> {
        let update = self.user_update(userid, fields);
        ctx.client.user_update(&update).await?;
        if let Some(depts) = update.dept_id_list {
            self.state().user_depts.insert(local_id.to_string(), depts);
        }
        // Counted with its record, which the `LinkUser` after it writes.
        self.state().updated_users.insert(local_id.to_string());
        Ok(())
    }

    /// A `LinkUser`: the link and the base recorded, with the departments an update of this
    /// run gave the user, as DingTalk now has them.
    async fn link_user(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::LinkUser {
            local_id,
            userid,
            unionid,
            realname,
            base,
        } = op
        else {
            return Err(not_a("a user to link"));
        };
        let link = Link {
            user_id: local_id.clone(),
            userid: userid.clone(),
            unionid: unionid.clone(),
            tenant_id: ctx.tenant,
        };
        let mut base = base.clone();
        if let Some(depts) = self.state().user_depts.remove(local_id) {
            base.depts = sorted(depts);
        }
        let counted = if self.state().updated_users.remove(local_id) {
            Counted::Updated
        } else {
            Counted::Nothing
        };
        self.record_link(ctx, link, realname.clone(), base, counted)
            .await;
        Ok(())
    }

    /// A `DeleteUser`: deleted in DingTalk (gone already is fine) and its snapshot dropped.
    async fn delete_user(
        &self,
        ctx: &ApplyCtx<'_>,
        local_id: &str,
        userid: &str,
    ) -> Result<(), EntityError> {
        self.flush(ctx, true).await;
        match ctx.client.user_delete(userid).await {
            Ok(()) => {}
            Err(error) if error.kind == ErrorKind::UserNotFound => {}
            Err(error) => return Err(error.into()),
        }
        ctx.store
            .delete_snapshot(ctx.tenant, entity::USER, local_id)
            .await?;
        self.state().summary.deleted += 1;
        Ok(())
    }

    /// An `UpdateLocalDept`: the local row changed and the base recorded.
    async fn update_local_dept(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::UpdateLocalDept {
            local_id,
            dept_id,
            name,
            parent,
            order,
            base,
            ..
        } = op
        else {
            return Err(not_a("a local department to update"));
        };
        let parent_id = self.resolve_local(parent)?;
        ctx.store
            .update_department(local_id, name, parent_id.as_deref(), *order)
            .await?;
        record_dept(ctx.store, ctx.tenant, local_id, *dept_id, base).await?;
        self.state().summary.updated += 1;
        Ok(())
    }

    /// A `CreateLocalUser` (one by one: a batch that failed): the user inserted and linked.
    async fn create_local_user(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::CreateLocalUser {
            userid,
            unionid,
            fields,
            base,
        } = op
        else {
            return Err(not_a("a local user to create"));
        };
        let new = NewUser {
            username: userid.clone(),
            realname: fields.realname.clone().unwrap_or_else(|| userid.clone()),
            phone: fields.phone.clone(),
            email: fields.email.clone(),
            telephone: fields.telephone.clone(),
            work_no: fields.work_no.clone(),
            depart_ids: self.local_depts(&fields.add_depts),
            tenant_id: ctx.tenant,
        };
        let id = ctx.store.insert_user(&new, ctx.new_user_password).await?;
        let link = Link {
            user_id: id,
            userid: userid.clone(),
            unionid: unionid.clone(),
            tenant_id: ctx.tenant,
        };
        self.save_link(ctx, &link, &new.realname, base).await?;
        self.state().summary.created += 1;
        Ok(())
    }

    /// An `UpdateLocalUser` (one by one): the fields changed, then the link and base saved,
    /// or only the base when the user was linked already.
    async fn update_local_user_op(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<(), EntityError> {
        let Op::UpdateLocalUser {
            local_id,
            userid,
            unionid,
            fields,
            link,
            base,
            ..
        } = op
        else {
            return Err(not_a("a local user to update"));
        };
        if !fields.is_empty() {
            self.update_local_user(ctx.store, local_id, fields).await?;
            self.state().summary.updated += 1;
        }
        if *link {
            let realname = fields.realname.clone().unwrap_or_default();
            let link = Link {
                user_id: local_id.clone(),
                userid: userid.clone(),
                unionid: unionid.clone(),
                tenant_id: ctx.tenant,
            };
            self.save_link(ctx, &link, &realname, base).await?;
        } else {
            ctx.store
                .put_snapshot(ctx.tenant, entity::USER, local_id, userid, &json(base))
                .await?;
        }
        Ok(())
    }
}
