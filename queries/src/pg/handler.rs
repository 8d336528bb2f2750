//! Simple and extended query protocol over the [`QueryEngine`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::auth::scope_of;
use super::compat::{self, Classified};
use super::errors::{to_pg, user_error};
use super::types;
use crate::engine::Request;
use crate::{QueryEngine, Scope};

/// A parsed statement of the extended protocol.
#[derive(Clone, Debug)]
pub enum PgStatement {
    /// SQL DataFusion runs; its result schema and parameter types are known from planning.
    Query {
        sql: String,
        schema: SchemaRef,
        params: Vec<Type>,
    },
    /// Answered by the endpoint itself (SET, SHOW, BEGIN, ...).
    Session(Classified),
}

pub struct PgQueryHandler {
    engine: QueryEngine,
    parser: Arc<PgParser>,
}

impl PgQueryHandler {
    pub fn new(engine: QueryEngine) -> Self {
        Self {
            parser: Arc::new(PgParser {
                engine: engine.clone(),
            }),
            engine,
        }
    }

    /// Runs DataFusion SQL and streams its rows in `format`.
    async fn run(
        &self,
        scope: &Scope,
        sql: String,
        params: Option<ParamValues>,
        format: Option<&Format>,
    ) -> PgWireResult<QueryResponse> {
        let rows = self
            .engine
            .stream(scope, &Request::Sql { sql, params }, None)
            .await
            .map_err(|e| to_pg(&e))?;
        let fields = Arc::new(types::fields(&rows.schema, format));
        let (_, _, batches) = rows.into_stream();
        let encode_fields = fields.clone();
        let data = batches.flat_map(move |batch| {
            let rows: Vec<PgWireResult<_>> = match batch {
                Ok(batch) => match types::encode(&batch, &encode_fields) {
                    Ok(rows) => rows.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(to_pg(&e))],
            };
            futures::stream::iter(rows)
        });
        Ok(QueryResponse::new(fields, data))
    }
}

/// The response of a statement answered by the endpoint.
fn session_response(statement: &Classified) -> PgWireResult<Response> {
    Ok(match statement {
        Classified::Empty => Response::EmptyQuery,
        Classified::Transaction { tag, begins: true } => Response::TransactionStart(Tag::new(tag)),
        Classified::Transaction { tag, begins: false } => Response::TransactionEnd(Tag::new(tag)),
        Classified::Command(tag) => Response::Execution(Tag::new(tag)),
        Classified::Show(name) => {
            let (columns, rows) = compat::show(name).ok_or_else(|| {
                user_error(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })?;
            let fields = Arc::new(show_fields(&columns));
            let mut encoder = pgwire::api::results::DataRowEncoder::new(fields.clone());
            let mut out = Vec::new();
            for row in rows {
                for value in row {
                    encoder.encode_field(&value)?;
                }
                out.push(Ok(encoder.take_row()));
            }
            let mut response = QueryResponse::new(fields, futures::stream::iter(out));
            response.set_command_tag("SHOW");
            Response::Query(response)
        }
        Classified::Sql(_) => unreachable!("SQL is run by the engine"),
    })
}

fn show_fields(columns: &[&str]) -> Vec<FieldInfo> {
    columns
        .iter()
        .map(|c| FieldInfo::new(c.to_string(), None, None, Type::TEXT, FieldFormat::Text))
        .collect()
}

#[async_trait]
impl SimpleQueryHandler for PgQueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let scope = scope_of(client)?;
        let statements = compat::split_statements(query);
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let result = match compat::classify(&statement) {
                Classified::Sql(sql) => {
                    self.run(&scope, sql, None, None).await.map(Response::Query)
                }
                other => session_response(&other),
            };
            match result {
                Ok(response) => responses.push(response),
                Err(PgWireError::UserError(info)) => {
                    // Later statements of the same message are not run, as in PostgreSQL.
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

/// Plans statements at `Parse` so `Describe` can answer before `Execute`.
pub struct PgParser {
    engine: QueryEngine,
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let scope = scope_of(client)?;
        let statements = compat::split_statements(sql);
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.into_iter().next() else {
            return Ok(None);
        };
        match compat::classify(&statement) {
            Classified::Sql(sql) => {
                let ctx = self.engine.context(&scope).map_err(|e| to_pg(&e))?;
                let df = self
                    .engine
                    .plan(&ctx, &scope, &sql)
                    .await
                    .map_err(|e| to_pg(&e))?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let inferred = df
                    .logical_plan()
                    .get_parameter_types()
                    .map_err(|e| to_pg(&crate::QueryError::from_datafusion(e)))?;
                let mut params: Vec<(usize, Type)> = inferred
                    .into_iter()
                    .filter_map(|(id, ty)| {
                        let n = id.strip_prefix('$')?.parse::<usize>().ok()?;
                        let ty = ty.map(|t| types::pg_type(&t)).unwrap_or(Type::TEXT);
                        Some((n, ty))
                    })
                    .collect();
                params.sort_by_key(|(n, _)| *n);
                let count = params.last().map(|(n, _)| *n).unwrap_or(0);
                let params = (1..=count)
                    .map(|n| {
                        params
                            .iter()
                            .find(|(m, _)| *m == n)
                            .map(|(_, t)| t.clone())
                            .unwrap_or(Type::TEXT)
                    })
                    .collect();
                Ok(Some(PgStatement::Query {
                    sql,
                    schema,
                    params,
                }))
            }
            Classified::Empty => Ok(None),
            other => Ok(Some(PgStatement::Session(other))),
        }
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(match stmt {
            PgStatement::Query { params, .. } => params.clone(),
            PgStatement::Session(_) => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match stmt {
            PgStatement::Query { schema, .. } => types::fields(schema, column_format),
            PgStatement::Session(Classified::Show(name)) => compat::show(name)
                .map(|(columns, _)| show_fields(&columns))
                .unwrap_or_default(),
            PgStatement::Session(_) => Vec::new(),
        })
    }
}

/// The value of parameter `idx` of `portal` as a DataFusion scalar of `ty`'s type.
fn parameter(portal: &Portal<PgStatement>, idx: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    let bad = |e: PgWireError| user_error("22P02", format!("parameter ${}: {e}", idx + 1));
    Ok(match types::arrow_type(ty) {
        DataType::Boolean => ScalarValue::Boolean(portal.parameter::<bool>(idx, ty).map_err(bad)?),
        DataType::Int64 => ScalarValue::Int64(match *ty {
            Type::INT2 => portal
                .parameter::<i16>(idx, ty)
                .map_err(bad)?
                .map(i64::from),
            Type::INT4 => portal
                .parameter::<i32>(idx, ty)
                .map_err(bad)?
                .map(i64::from),
            _ => portal.parameter::<i64>(idx, ty).map_err(bad)?,
        }),
        DataType::Float64 => ScalarValue::Float64(match *ty {
            Type::FLOAT4 => portal
                .parameter::<f32>(idx, ty)
                .map_err(bad)?
                .map(f64::from),
            _ => portal.parameter::<f64>(idx, ty).map_err(bad)?,
        }),
        DataType::Timestamp(_, Some(_)) => ScalarValue::TimestampNanosecond(
            portal
                .parameter::<chrono::DateTime<chrono::FixedOffset>>(idx, ty)
                .map_err(bad)?
                .and_then(|t| t.timestamp_nanos_opt()),
            Some("UTC".into()),
        ),
        DataType::Timestamp(_, None) => ScalarValue::TimestampNanosecond(
            portal
                .parameter::<chrono::NaiveDateTime>(idx, ty)
                .map_err(bad)?
                .and_then(|t| t.and_utc().timestamp_nanos_opt()),
            None,
        ),
        DataType::Date32 => ScalarValue::Date32(
            portal
                .parameter::<chrono::NaiveDate>(idx, ty)
                .map_err(bad)?
                .map(|d| {
                    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
                        as i32
                }),
        ),
        _ => ScalarValue::Utf8(portal.parameter::<String>(idx, &Type::TEXT).map_err(bad)?),
    })
}

#[async_trait]
impl ExtendedQueryHandler for PgQueryHandler {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let scope = scope_of(client)?;
        match &portal.statement.statement {
            PgStatement::Session(statement) => session_response(statement),
            PgStatement::Query { sql, params, .. } => {
                let declared = &portal.statement.parameter_types;
                let mut values = Vec::with_capacity(portal.parameter_len());
                for idx in 0..portal.parameter_len() {
                    let ty = declared
                        .get(idx)
                        .cloned()
                        .flatten()
                        .filter(|t| *t != Type::UNKNOWN)
                        .or_else(|| params.get(idx).cloned())
                        .unwrap_or(Type::TEXT);
                    values.push(parameter(portal, idx, &ty)?);
                }
                let values = (!values.is_empty()).then(|| ParamValues::from(values));
                self.run(
                    &scope,
                    sql.clone(),
                    values,
                    Some(&portal.result_column_format),
                )
                .await
                .map(Response::Query)
            }
        }
    }
}
