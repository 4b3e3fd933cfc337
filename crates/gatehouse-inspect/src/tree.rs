//! A generic view of a `pg_query` parse tree: every message as a [`Tree::Node`] named by its
//! type, with its fields in order.
//!
//! The parse tree has some 280 message types. A hand-written walker over them would miss the
//! ones it does not list (a function call inside an `ARRAY[...]`, a subquery in a `VALUES`
//! list), and a missed node is an evasion route. Every message derives `serde::Serialize`, so
//! serialising into this tree visits every field of every message by construction; the
//! analysis then walks one generic shape.

use serde::ser::{self, Serialize};
use std::fmt;

/// One value of the parse tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    /// A message (or a `oneof` variant holding one), by type name, with its fields.
    Node(&'static str, Vec<(&'static str, Tree)>),
    List(Vec<Tree>),
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl Tree {
    /// Builds the tree of any serialisable parse-tree value.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Tree {
        // The serializer below never fails; a failure would only come from a Serialize impl
        // that reports one, which prost messages do not.
        value.serialize(Builder).unwrap_or(Tree::Null)
    }

    /// The type name, for a message.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Tree::Node(name, _) => Some(name),
            _ => None,
        }
    }

    /// A field of a message (`Null` when absent or not a message).
    pub fn field(&self, key: &str) -> &Tree {
        match self {
            Tree::Node(_, fields) => fields
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(&Tree::Null, |(_, v)| v),
            _ => &Tree::Null,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Tree::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn bool(&self) -> bool {
        matches!(self, Tree::Bool(true))
    }

    pub fn is_null(&self) -> bool {
        match self {
            Tree::Null => true,
            Tree::List(items) => items.is_empty(),
            _ => false,
        }
    }

    pub fn items(&self) -> &[Tree] {
        match self {
            Tree::List(items) => items,
            _ => &[],
        }
    }

    /// The `sval` of every `String` message in a list (a qualified name: `schema.table`).
    pub fn names(&self) -> Vec<&str> {
        self.items()
            .iter()
            .filter_map(|n| match n {
                Tree::Node("String", _) => n.field("sval").str(),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug)]
pub struct Never(String);

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Never(msg.to_string())
    }
}

struct Builder;

pub struct Seq(Vec<Tree>);
pub struct Fields(&'static str, Vec<(&'static str, Tree)>);
pub struct Map(Vec<Tree>);

impl ser::Serializer for Builder {
    type Ok = Tree;
    type Error = Never;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = Seq;
    type SerializeMap = Map;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Fields;

    fn serialize_bool(self, v: bool) -> Result<Tree, Never> {
        Ok(Tree::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Tree, Never> {
        Ok(Tree::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Tree, Never> {
        Ok(Tree::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, _: f32) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_f64(self, _: f64) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_char(self, v: char) -> Result<Tree, Never> {
        Ok(Tree::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Tree, Never> {
        Ok(Tree::Str(v.to_owned()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_none(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Tree, Never> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Tree, Never> {
        Ok(Tree::Node(name, Vec::new()))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Tree, Never> {
        Ok(Tree::Node(variant, Vec::new()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Tree, Never> {
        value.serialize(self)
    }
    /// A `oneof` variant (`Node::node`, `A_Const::val`): the message it holds, which already
    /// carries its type name; anything else is wrapped under the variant's name.
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Tree, Never> {
        match value.serialize(Builder)? {
            node @ Tree::Node(..) => Ok(node),
            other => Ok(Tree::Node(variant, vec![("", other)])),
        }
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Never> {
        Ok(Seq(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Never> {
        Ok(Seq(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq, Never> {
        Ok(Seq(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        len: usize,
    ) -> Result<Seq, Never> {
        Ok(Seq(Vec::with_capacity(len)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Map, Never> {
        Ok(Map(Vec::new()))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Fields, Never> {
        Ok(Fields(name, Vec::with_capacity(len)))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Fields, Never> {
        Ok(Fields(variant, Vec::with_capacity(len)))
    }
}

impl ser::SerializeSeq for Seq {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.0.push(value.serialize(Builder)?);
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::List(self.0))
    }
}

impl ser::SerializeTuple for Seq {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Tree, Never> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Seq {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Tree, Never> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Seq {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Tree, Never> {
        ser::SerializeSeq::end(self)
    }
}

/// Maps do not occur in the parse tree; their keys and values are kept as a flat list so a
/// walk still sees every value.
impl ser::SerializeMap for Map {
    type Ok = Tree;
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        self.0.push(key.serialize(Builder)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.0.push(value.serialize(Builder)?);
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::List(self.0))
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.1.push((key, value.serialize(Builder)?));
        Ok(())
    }
    /// `Node { node }` wrappers are dropped: a walk sees the message they hold.
    fn end(mut self) -> Result<Tree, Never> {
        if self.0 == "Node" && self.1.len() == 1 && self.1[0].0 == "node" {
            return Ok(self.1.remove(0).1);
        }
        Ok(Tree::Node(self.0, self.1))
    }
}

impl ser::SerializeStructVariant for Fields {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Tree, Never> {
        ser::SerializeStruct::end(self)
    }
}
